"""CLI for the first chapter: ``gptlab perceptron``, ``gptlab adaline``, ``gptlab xor``.

Each prints a short training log (epoch, mistakes or loss, accuracy) and writes PNGs to ``--out``:
the weights on the 20×20 retina for image tasks, the decision boundary for 2-D data, and the
curve per epoch.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gptlab.errors import ConfigError, DataError
from gptlab.fileio import make_output_folder

# the logs' last column: the fraction of the training samples right after the epoch (not held-out data)
TRAINING_ACCURACY = "training accuracy"


def _rows_to_show(n: int, limit: int = 12) -> list[int]:
    """Epoch indices (0-based) to print: all of them if few, else the first few, every k-th, and the last."""
    if n <= limit:
        return list(range(n))
    step = max(1, n // (limit - 5))
    return sorted({*range(5), *range(step - 1, n, step), n - 1})


def _print_log(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


def _equation(w: np.ndarray, b: float) -> str:
    """``w·x + b`` written out, e.g. ``1·x₁ − 1·x₂ + 0``."""
    return f"{w[0]:g}·x₁ {'−' if w[1] < 0 else '+'} {abs(w[1]):g}·x₂ {'−' if b < 0 else '+'} {abs(b):g}"


def _check_positive(flag: str, value: float) -> None:
    if not value > 0 or not np.isfinite(value):
        raise ConfigError(f"{flag} must be positive, got {value}")


def _load_data(args: argparse.Namespace) -> tuple[Any, Any | None]:
    """The data set named by ``--data`` and, with ``--test-fraction``, a held-out part of it."""
    from gptlab.neurons.datasets import load, train_test_split

    _check_positive("--size", args.size)
    if args.test_fraction and not 0 < args.test_fraction < 1:
        raise ConfigError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    size = None if args.no_resize else args.size
    data = load(args.data, digits=args.digits, size=size, random_state=args.seed)
    counts = ", ".join(f"{name} ({int(np.sum(data.y == i))})" for i, name in enumerate(data.class_names))
    shape = f" ({data.image_shape[1]}×{data.image_shape[0]} retina)" if data.image_shape else ""
    print(f"data: {data.name}: {len(data)} samples, {data.X.shape[1]} inputs{shape}; classes {counts}")
    if args.test_fraction:
        train, test = train_test_split(data, args.test_fraction, random_state=args.seed)
        print(f"held out {len(test)} samples for testing; training on {len(train)}")
        return train, test
    return data, None


def _pictures(model: Any, data: Any, out: Path, what: str) -> list[Path]:
    """The weights on the retina (image data) or the decision boundary (2-D data)."""
    from gptlab.neurons import plots

    title_name = f"{what}: {data.class_names[0]} vs {data.class_names[1]}"
    if data.image_shape is not None and hasattr(model, "coef_"):
        return [
            plots.plot_retina(
                model.coef_,
                data.image_shape,
                out / "weights.png",
                class_names=data.class_names,
                title=f"{title_name} — weights",
            )
        ]
    if data.X.shape[1] == 2 and getattr(model, "pocket", False) and model.mistakes_[-1] > 0:
        # not separated: the last weights may be anything (zero, for XOR in data order), so draw
        # the best line the perceptron passed through, and where it stood after each epoch
        right = round(model.pocket_accuracy_ * len(data))
        return [
            plots.plot_linear_boundary(
                model.pocket_coef_,
                model.pocket_intercept_,
                data.X,
                data.y,
                out / "boundary.png",
                earlier=model.epoch_weights_,
                earlier_label="the line after each epoch",
                line_label=f"best line found: {right} of {len(data)} right",
                class_names=data.class_names,
                title=f"{title_name} — the best line found",
            )
        ]
    if data.X.shape[1] == 2:
        return [
            plots.plot_decision_boundary(
                model, data.X, data.y, out / "boundary.png", class_names=data.class_names, title=title_name
            )
        ]
    return []


def _report_test(model: Any, test: Any | None) -> None:
    if test is not None:
        print(f"held-out accuracy: {model.score(test.X, test.y):.1%} on {len(test)} samples")


def cmd_perceptron(args: argparse.Namespace) -> int:
    from gptlab.neurons import plots
    from gptlab.neurons.perceptron import Perceptron, mistake_bound

    _check_positive("--epochs", args.epochs)
    out = make_output_folder(args.out)
    train, test = _load_data(args)
    plane = train.X.shape[1] == 2  # then keep the best line in a pocket, to draw it if none separates
    model = Perceptron(max_epochs=args.epochs, shuffle=args.shuffle, random_state=args.seed, pocket=plane).fit(
        train.X, train.y
    )
    rows = [
        [str(i + 1), str(model.mistakes_[i]), f"{model.accuracy_curve_[i]:.1%}"]
        for i in _rows_to_show(model.n_iter_)
    ]
    _print_log(["epoch", "mistakes", TRAINING_ACCURACY], rows)
    if model.mistakes_[-1] == 0:
        print(f"converged: no mistakes in epoch {model.n_iter_}")
    else:
        print(f"stopped after {model.n_iter_} epochs, still making mistakes")
        if plane and np.any(model.pocket_coef_ != 0):
            print(
                f"best line found (pocket): {_equation(model.pocket_coef_, model.pocket_intercept_)} = 0, "
                f"training accuracy {model.pocket_accuracy_:.1%}"
            )
        elif plane:
            print(
                f"best weights found (pocket): w = 0, no line (every point on one side), training accuracy "
                f"{model.pocket_accuracy_:.1%}; in data order the updates can cancel: try --shuffle"
            )
    try:
        bound = mistake_bound(train.X, train.y)
    except DataError:
        print(
            "convergence theorem: the classes are not linearly separable, so it promises nothing "
            "(and the perceptron never stops making mistakes)"
        )
    else:
        verdict = "holds" if model.total_mistakes_ <= bound.bound else "VIOLATED"
        print(
            f"convergence theorem: {model.total_mistakes_} mistakes in all ≤ (R/γ)² = "
            f"({bound.radius:.4g} / {bound.margin:.4g})² = {bound.bound:,.1f}  — {verdict}"
        )
    _report_test(model, test)
    written = _pictures(model, train, out, "Perceptron")
    written.append(
        plots.plot_curve(
            model.mistakes_,
            out / "mistakes.png",
            ylabel="mistakes",
            title="Perceptron: mistakes per epoch",
            integer_values=True,
        )
    )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_adaline(args: argparse.Namespace) -> int:
    from gptlab.neurons import plots
    from gptlab.neurons.adaline import Adaline

    _check_positive("--epochs", args.epochs)
    if args.learning_rate is not None:
        _check_positive("--learning-rate", args.learning_rate)
    out = make_output_folder(args.out)
    train, test = _load_data(args)
    if args.learning_rate is None:
        learning_rate = 0.1 / float(np.max(np.sum(train.X**2, axis=1)) + 1.0)
        note = " (default: 0.1 / max ‖(x, 1)‖²)"
    else:
        learning_rate, note = args.learning_rate, ""
    print(f"learning rate {learning_rate:.3g}{note}")
    model = Adaline(
        learning_rate=learning_rate, max_epochs=args.epochs, shuffle=args.shuffle, random_state=args.seed
    ).fit(train.X, train.y)
    rows = [
        [str(i + 1), f"{model.loss_curve_[i]:.4f}", f"{model.accuracy_curve_[i]:.1%}"]
        for i in _rows_to_show(model.n_iter_)
    ]
    _print_log(["epoch", "mean squared error", TRAINING_ACCURACY], rows)
    _report_test(model, test)
    written = _pictures(model, train, out, "ADALINE")
    written.append(
        plots.plot_curve(
            model.loss_curve_,
            out / "loss.png",
            ylabel="mean squared error",
            title="ADALINE: squared error per epoch",
            log_scale=True,
        )
    )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_xor(args: argparse.Namespace) -> int:
    from gptlab.neurons import plots
    from gptlab.neurons.datasets import make_xor
    from gptlab.neurons.mlp import MLP
    from gptlab.neurons.perceptron import Perceptron

    for flag, value in (
        ("--epochs", args.epochs),
        ("--hidden", args.hidden),
        ("--learning-rate", args.learning_rate),
        ("--perceptron-epochs", args.perceptron_epochs),
    ):
        _check_positive(flag, value)
    out = make_output_folder(args.out)
    data = make_xor()
    written = []

    print(
        f"1. one perceptron, {args.perceptron_epochs} epochs over the 4 points of XOR in a new random "
        "order each epoch, keeping the best weights it passes through in its pocket (Gallant 1990):"
    )
    single = Perceptron(
        max_epochs=args.perceptron_epochs, shuffle=True, random_state=args.seed, pocket=True
    ).fit(data.X, data.y)
    print(
        f"   mistakes per epoch: {single.mistakes_[:10]}{' ...' if single.n_iter_ > 10 else ''} "
        "— it never has an epoch without one: no line separates XOR (Minsky & Papert 1969)"
    )
    w, b = single.pocket_coef_, single.pocket_intercept_
    wrong = [x for x, target in zip(data.X, data.y) if (x @ w + b > 0) != (target == 1)]
    right = round(single.pocket_accuracy_ * len(data))
    print(
        f"   best line found: {_equation(w, b)} = 0 gets {right} of {len(data)} points right "
        f"({single.pocket_accuracy_:.0%}); wrong: {', '.join(f'({int(x[0])}, {int(x[1])})' for x in wrong)}"
    )
    print(
        f"   training accuracy after the last epoch: {single.accuracy_curve_[-1]:.0%} "
        "(in data order, without shuffling, the four updates cancel and the weights are back at 0 "
        "after every epoch)"
    )
    written.append(
        plots.plot_linear_boundary(
            w,
            b,
            data.X,
            data.y,
            out / "perceptron_boundary.png",
            earlier=single.epoch_weights_,
            earlier_label="the line after each epoch",
            line_label=f"best line found: {right} of {len(data)} right",
            title="One perceptron on XOR: the best line gets 3 of 4",
        )
    )

    print(
        f"2. a 2-{args.hidden}-1 network ({args.activation} hidden units, sigmoid output) trained by "
        f"backpropagation, learning rate {args.learning_rate}, {args.epochs} epochs:"
    )
    net = MLP(
        hidden_layer_sizes=(args.hidden,),
        activation=args.activation,
        learning_rate=args.learning_rate,
        max_epochs=args.epochs,
        random_state=args.seed,
    ).fit(data.X, data.y)
    rows = [
        [str(i + 1), f"{net.loss_curve_[i]:.4f}", f"{net.accuracy_curve_[i]:.0%}"]
        for i in _rows_to_show(net.n_iter_)
    ]
    _print_log(["epoch", "cross-entropy", TRAINING_ACCURACY], rows)
    proba = net.predict_proba(data.X)[:, 1]
    for x, target, p in zip(data.X, data.y, proba):
        print(f"   {int(x[0])} xor {int(x[1])} = {target}   network: P(1) = {p:.3f}")
    if args.activation == "step":
        print(
            "   step units have zero derivative, so backprop trained only the output layer: the hidden "
            "units kept their random initial weights and biases, fixed (the dashed lines in the picture; "
            "XOR is solved only if those happen to separate it)"
        )
    print(f"accuracy: {net.score(data.X, data.y):.0%}")
    written.append(
        plots.plot_decision_boundary(
            net,
            data.X,
            data.y,
            out / "mlp_boundary.png",
            title=f"2-{args.hidden}-1 {args.activation} network on XOR",
            hidden_label="hidden units' lines (random, fixed)" if args.activation == "step" else "hidden units' lines",
        )
    )
    written.append(
        plots.plot_curve(
            net.loss_curve_,
            out / "mlp_loss.png",
            ylabel="cross-entropy",
            title="Backpropagation on XOR: loss per epoch",
            log_scale=True,
        )
    )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default="digits",
        help="digits (two digits of scikit-learn's bundled set on a 20×20 retina), blobs "
        "(separable 2-D clouds), xor, or a folder with two class subfolders of images "
        "(e.g. pets/cats, pets/dogs) (default: digits)",
    )
    p.add_argument(
        "--digits",
        type=int,
        nargs=2,
        default=(0, 1),
        metavar=("A", "B"),
        help="the two digits to tell apart (default: 0 1)",
    )
    p.add_argument("--size", type=int, default=20, help="retina side in pixels (default: 20, the Mark I's)")
    p.add_argument(
        "--no-resize",
        action="store_true",
        help="keep folder images at their own size (they must all be the same size)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        help="hold out this fraction of each class and report accuracy on it (default: 0)",
    )
    p.add_argument("--shuffle", action="store_true", help="present samples in a new random order each epoch")
    p.add_argument("--seed", type=int, default=0, help="random seed (blobs, shuffling, the held-out split)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``perceptron``, ``adaline`` and ``xor`` to the ``gptlab`` parser."""
    p = subparsers.add_parser(
        "perceptron",
        help="train Rosenblatt's perceptron (default: digits 0 vs 1 on a 20×20 retina)",
        description="Rosenblatt's perceptron rule: on each mistake (s·(w·x+b) <= 0) add s·x to the "
        "weights and s to the bias; stop after an epoch without mistakes. Prints mistakes and "
        "accuracy per epoch and checks the convergence theorem (mistakes <= (R/γ)²); writes the "
        "weights as a retina heat map (image data) or the decision boundary (2-D data), and the "
        "mistakes per epoch.",
    )
    _add_data_flags(p)
    p.add_argument("--epochs", type=int, default=100, help="most epochs to run (default: 100)")
    p.add_argument("--out", default="runs/perceptron", help="folder for the PNGs (default: runs/perceptron)")
    p.set_defaults(func=cmd_perceptron)

    p = subparsers.add_parser(
        "adaline",
        help="train Widrow and Hoff's ADALINE (LMS) (default: digits 0 vs 1)",
        description="ADALINE: the same neuron trained by the Widrow–Hoff LMS rule, w += η·(s − ŷ)·x "
        "on every sample (stochastic gradient descent on squared error), thresholded only to "
        "predict. Prints the mean squared error and accuracy per epoch; writes the weights (image "
        "data) or decision boundary (2-D data), and the loss per epoch.",
    )
    _add_data_flags(p)
    p.add_argument("--epochs", type=int, default=30, help="epochs to run (default: 30)")
    p.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="step size η (default: 0.1 / the largest squared input norm, which is stable)",
    )
    p.add_argument("--out", default="runs/adaline", help="folder for the PNGs (default: runs/adaline)")
    p.set_defaults(func=cmd_adaline)

    p = subparsers.add_parser(
        "xor",
        help="show the XOR wall: one perceptron fails, a hidden layer with backprop succeeds",
        description="XOR, the problem no single neuron can solve: a perceptron never gets all four "
        "points right (the best line it finds, kept by the pocket algorithm, gets three); a 2-H-1 "
        "network trained by backpropagation does. Writes both decision boundaries (the perceptron's "
        "with its line after each epoch) and the network's loss curve.",
    )
    p.add_argument("--hidden", type=int, default=4, help="hidden units (default: 4; 2 is the minimum)")
    p.add_argument(
        "--activation",
        default="tanh",
        choices=["tanh", "sigmoid", "relu", "step"],
        help="hidden activation (default: tanh; step cannot be trained by backprop)",
    )
    p.add_argument("--epochs", type=int, default=2000, help="gradient-descent epochs (default: 2000)")
    p.add_argument("--learning-rate", type=float, default=0.5, help="step size (default: 0.5)")
    p.add_argument(
        "--perceptron-epochs", type=int, default=20, help="epochs for the single perceptron (default: 20)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of the perceptron's sample order and the network's initial weights",
    )
    p.add_argument("--out", default="runs/xor", help="folder for the PNGs (default: runs/xor)")
    p.set_defaults(func=cmd_xor)

import pytest
from PIL import Image

from gptlab.cli.main import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_perceptron_defaults_digits(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out is runs/perceptron
    code, out, err = run(capsys, "perceptron")
    assert code == 0, err
    assert "digits-0-vs-1: 360 samples, 400 inputs (20×20 retina)" in out
    assert "epoch  mistakes  training accuracy" in out and "converged" in out
    assert "convergence theorem: 10 mistakes in all ≤ (R/γ)²" in out and "holds" in out
    assert (tmp_path / "runs/perceptron/weights.png").stat().st_size > 1000
    assert (tmp_path / "runs/perceptron/mistakes.png").exists()


def test_perceptron_on_blobs_and_xor(tmp_path, capsys):
    code, out, err = run(capsys, "perceptron", "--data", "blobs", "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert (tmp_path / "b/boundary.png").exists() and "holds" in out
    code, out, err = run(
        capsys, "perceptron", "--data", "xor", "--epochs", "10", "--out", str(tmp_path / "x")
    )
    assert code == 0, err
    assert "still making mistakes" in out and "not linearly separable" in out
    assert "w = 0, no line" in out and "training accuracy 50.0%" in out and "try --shuffle" in out  # data order
    code, out, err = run(
        capsys, "perceptron", "--data", "xor", "--shuffle", "--epochs", "10", "--out", str(tmp_path / "x")
    )
    assert "best line found (pocket): 1·x₁ − 1·x₂ + 0 = 0, training accuracy 75.0%" in out
    assert (tmp_path / "x/boundary.png").exists()


def test_adaline_defaults(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "adaline", "--epochs", "5", "--test-fraction", "0.2")
    assert code == 0, err
    assert "mean squared error" in out and "held-out accuracy" in out
    assert (tmp_path / "runs/adaline/weights.png").exists() and (tmp_path / "runs/adaline/loss.png").exists()


def test_xor_command(tmp_path, capsys):
    code, out, err = run(capsys, "xor", "--out", str(tmp_path))
    assert code == 0, err
    assert "no line separates XOR" in out and "accuracy: 100%" in out
    # the pocket keeps the best line the perceptron passed through: 3 of the 4 corners
    assert "best line found: 1·x₁ − 1·x₂ + 0 = 0 gets 3 of 4 points right (75%); wrong: (0, 1)" in out
    for name in ("perceptron_boundary.png", "mlp_boundary.png", "mlp_loss.png"):
        assert (tmp_path / name).exists()


def test_xor_step_says_the_hidden_units_are_fixed(tmp_path, capsys):
    code, out, err = run(capsys, "xor", "--activation", "step", "--epochs", "50", "--out", str(tmp_path))
    assert code == 0, err
    assert "kept their random initial weights and biases, fixed" in out


def test_own_image_folder(image_folder, tmp_path, capsys):
    code, out, err = run(capsys, "perceptron", "--data", str(image_folder), "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert "classes cats (5), dogs (5)" in out
    assert (tmp_path / "o/weights.png").exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["perceptron", "--data", "no/such/folder"], ["no such folder"]),
        (["perceptron", "--digits", "4", "4"], ["two different digits"]),
        (["perceptron", "--epochs", "0"], ["--epochs must be positive"]),
        (["adaline", "--learning-rate", "-0.1"], ["--learning-rate must be positive"]),
        (["adaline", "--data", "blobs", "--learning-rate", "50"], ["diverged"]),
        (["adaline", "--test-fraction", "1.5"], ["--test-fraction"]),
        (["xor", "--hidden", "0"], ["--hidden must be positive"]),
        (["perceptron", "--size", "-3"], ["--size must be positive"]),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, args, fragments):
    code, _, err = run(capsys, *args, "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, *fragments)


def test_bad_folders_are_one_line(tmp_path, capsys):
    one = tmp_path / "one"
    (one / "cats").mkdir(parents=True)
    Image.new("L", (8, 8)).save(one / "cats" / "a.png")
    code, _, err = run(capsys, "perceptron", "--data", str(one), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "two class subfolders")
    (one / "dogs").mkdir()
    (one / "dogs" / "b.txt").write_text("woof")
    code, _, err = run(capsys, "adaline", "--data", str(one), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "b.txt: not an image")
    (one / "dogs" / "b.txt").unlink()
    Image.new("L", (9, 8)).save(one / "dogs" / "b.png")
    code, _, err = run(capsys, "perceptron", "--data", str(one), "--no-resize", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "image is 9×8 but earlier ones are 8×8")

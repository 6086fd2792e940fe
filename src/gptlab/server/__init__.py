"""An OpenAI-compatible HTTP server for gptlab models, and a web playground.

``gptlab serve RUN`` loads a checkpoint and serves it (see :mod:`gptlab.cli.serve`). The pieces,
one concern each:

* :mod:`~gptlab.server.protocol` — pydantic request/response models with bounds, so bad input is a
  400 before it reaches the model;
* :mod:`~gptlab.server.engine` — the batching engine that owns the model;
* :mod:`~gptlab.server.prompts` — prompts and chat messages to token ids and engine requests;
* :mod:`~gptlab.server.generation` — runs the ``n`` engine streams of one HTTP request;
* :mod:`~gptlab.server.completions` / :mod:`~gptlab.server.chat_completions` — OpenAI response shapes;
* :mod:`~gptlab.server.inspect_route` — ``POST /v1/inspect`` (attention, probabilities) on a copy of the model;
* :mod:`~gptlab.server.app` — the FastAPI routes; errors, auth, limits, CORS, metrics, SSE beside it;
* ``static/`` — the playground page, plain HTML/JS/CSS.

Nothing here is imported by ``gptlab`` itself: FastAPI and friends are the ``server`` extra.
"""

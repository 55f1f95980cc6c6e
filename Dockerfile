# CPU image: runs the tests and `python -m bot run --paper --sim` (the loopback exchange on the embedded demo).
#   docker build -t bot .
#   docker run --rm -it bot                       # live status against the loopback exchange
#   docker run --rm bot make test                 # the test suite (shared data tests skip without ../shared)
#   docker run --rm -e BOT_... bot python -m bot run --paper   # real venues (needs network)
# PyTorch: TORCH is what pip installs for it (as in the Makefile). For a small CPU image pass the CPU wheel
# index from pytorch.org: --build-arg TORCH="torch==2.13.0 --index-url <that index>".
FROM python:3.11-slim
ARG TORCH="torch==2.13.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot/ bot/
COPY strategies/ strategies/
COPY models/ models/
COPY replay/ replay/
RUN python -m venv .venv && .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q $TORCH \
    && .venv/bin/pip install -q -e '.[dev]' \
    && touch .venv/.installed
COPY . .
RUN touch .venv/.installed && .venv/bin/python -c 'from bot.book import warm_up; warm_up()'  # numba's cache
ENV PATH=/app/.venv/bin:$PATH
CMD ["python", "-m", "bot", "run", "--paper", "--sim"]

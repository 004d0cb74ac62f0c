# syntax=docker/dockerfile:1
# regcred's container image. Two stages: wheels are built with the full toolchain of the
# first, the second installs them and nothing else, so no compiler, build tool or pip cache
# reaches the image. Build: docker build -t regcred .
#
# The Python line the tests run on, pinned to a patch release so rebuilds are reproducible.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps the rest of the tree out of the context).
COPY pyproject.toml README.md ./
COPY webhook ./webhook
# regcred and every dependency as wheels; any that ships no wheel for this platform is built here.
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Install from the build stage's wheels only (--no-index: nothing else is fetched), mounted
# for this step alone so no layer keeps them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels regcred \
    && groupadd --system --gid 65532 regcred \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin regcred
# A numeric user, so the kubelet can enforce runAsNonRoot without reading /etc/passwd.
USER 65532:65532
# Admission and probes (HTTPS), metrics (HTTP), the CI credentials API (HTTPS, when enabled).
EXPOSE 10250 9090 8443
ENTRYPOINT ["regcred", "serve"]

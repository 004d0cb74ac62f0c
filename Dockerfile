# syntax=docker/dockerfile:1
# regcred's container image. Two stages: wheels are built with the full toolchain of the
# first, the second installs them and nothing else, so no compiler, build tool or pip cache
# reaches the image. Build: docker build -t regcred .
#
# The Python line the tests run on, pinned to a patch release and, by digest, to one build of
# it: a tag is rebuilt in place (Debian updates), a digest never changes. Updating it is in
# requirements/README.md; the build fails, never silently drifts, if the digest is wrong.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Every dependency exactly as locked (requirements/README.md): each file's SHA-256 must match
# (--require-hashes) and only published wheels are taken (--only-binary), so nothing is built
# from an sdist whose build tools pip would fetch unchecked.
COPY requirements/image.txt requirements/build.txt ./requirements/
RUN pip install --require-hashes --only-binary=:all: -r requirements/build.txt \
    && pip wheel --require-hashes --only-binary=:all: --wheel-dir /wheels -r requirements/image.txt
# Only what regcred's wheel is built from (.dockerignore keeps the rest of the tree out of the
# context); its build tools are the locked ones just installed, not fetched again.
COPY pyproject.toml README.md ./
COPY webhook ./webhook
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Install from the build stage's wheels only (--no-index: nothing else is fetched), mounted
# for this step alone so no layer keeps them; the dependencies against their locked hashes
# once more, then regcred itself (its wheel was just built, so it has no published hash).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=build,source=/src/requirements,target=/requirements \
    pip install --no-cache-dir --no-index --find-links=/wheels --require-hashes -r /requirements/image.txt \
    && pip install --no-cache-dir --no-index --no-deps /wheels/regcred-*.whl \
    && groupadd --system --gid 65532 regcred \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin regcred
# A numeric user, so the kubelet can enforce runAsNonRoot without reading /etc/passwd.
USER 65532:65532
# Admission and probes (HTTPS), metrics (HTTP), the CI credentials API (HTTPS, when enabled).
EXPOSE 10250 9090 8443
ENTRYPOINT ["regcred", "serve"]

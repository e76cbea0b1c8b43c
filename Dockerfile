# syntax=docker/dockerfile:1
# One Dockerfile for every loopwise image: the four services and the web console.
# SERVICE picks the pip extra installed into the image and the image's command:
#   decision   the decision extra (onnxruntime): never scikit-learn, skl2onnx or EconML
#   feedback   the base packages only
#   trainer    scikit-learn, skl2onnx, onnx, onnxruntime
#   evaluator  EconML, scikit-learn, matplotlib, ONNX
#   console    Starlette, uvicorn, Jinja2, matplotlib and the SDK
# Build from the repository root (`make images` builds all five):
#   docker build --build-arg SERVICE=decision -t loopwise/decision:0.1.0 .
#
# The base image is pinned by digest (the same bytes on every build). To move to a newer
# python:3.11-slim-bookworm, read its current digest with
#   docker buildx imagetools inspect python:3.11-slim-bookworm
# and replace the sha256 below (or pass --build-arg PYTHON_IMAGE=...@sha256:...).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
ARG SERVICE=decision

# -- build: a virtualenv without pip holding loopwise (a wheel, not editable) and one
# extra, installed by the base image's pip from outside the virtualenv
FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv --without-pip /opt/venv
WORKDIR /src
COPY pyproject.toml setup.py README.md constraints.txt ./
COPY lib ./lib
COPY services ./services
RUN python -m pip --python /opt/venv/bin/python install -c constraints.txt ".[${SERVICE}]"

# -- runtime-base: the interpreter without pip, an unprivileged user, OCI labels
FROM ${PYTHON_IMAGE} AS runtime-base
ARG PYTHON_IMAGE
ARG SERVICE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="loopwise-${SERVICE}" \
      org.opencontainers.image.description="loopwise ${SERVICE}: self-hosted real-time smart strategies" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="loopwise" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
RUN python -m pip uninstall -y -q pip \
 && rm -f /usr/local/bin/pip /usr/local/bin/pip3 /usr/local/bin/pip3.* \
 && groupadd --system --gid 10001 loopwise \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent loopwise \
 && mkdir -p /var/lib/loopwise && chown 10001:10001 /var/lib/loopwise
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    LOOPWISE_DATA_DIR=/var/lib/loopwise

# -- what differs per image: listen address, ports, command (only the stage named by
# SERVICE is built)
FROM runtime-base AS decision
ENV LOOPWISE_DECISION_ADDRESS=0.0.0.0:50051
EXPOSE 50051 9464
CMD ["python", "-m", "loopwise.services.decision"]

FROM runtime-base AS feedback
ENV LOOPWISE_FEEDBACK_ADDRESS=0.0.0.0:50052
EXPOSE 50052 9465
CMD ["python", "-m", "loopwise.services.feedback"]

# The tree learners' native code needs the OpenMP runtime.
FROM runtime-base AS with-openmp
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

FROM with-openmp AS trainer
ENV LOOPWISE_TRAINER_ADDRESS=0.0.0.0:50053
EXPOSE 50053 9466
CMD ["python", "-m", "loopwise.services.trainer"]

FROM with-openmp AS evaluator
ENV LOOPWISE_EVALUATOR_ADDRESS=0.0.0.0:50054
EXPOSE 50054 9467
CMD ["python", "-m", "loopwise.services.evaluator"]

FROM runtime-base AS console
ENV MPLCONFIGDIR=/tmp/matplotlib LOOPWISE_CONSOLE_HOST=0.0.0.0 LOOPWISE_CONSOLE_PORT=8090
EXPOSE 8090
CMD ["python", "-m", "loopwise.console"]

# -- runtime: the stage of SERVICE plus the virtualenv, run by the unprivileged user
FROM ${SERVICE} AS runtime
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/lib/loopwise

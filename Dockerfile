# Slim, non-root image running `switchboard serve`. Provide SWITCHBOARD_JWT_SECRET (or mount
# a TOML file and set SWITCHBOARD_CONFIG); the server refuses to start without a secret.
FROM python:3.11-slim AS build
# a compiler for media/_rtpsend.c and signaling/_fanout.c (the compiled writers), in the
# build stage only
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY config ./config
COPY turn ./turn
COPY signaling ./signaling
COPY media ./media
COPY switchboard ./switchboard
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/switchboard switchboard
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER switchboard
WORKDIR /var/lib/switchboard
ENV SWITCHBOARD_HOST=0.0.0.0 \
    SWITCHBOARD_PORT=7880 \
    SWITCHBOARD_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
EXPOSE 7880
# SFU media (SWITCHBOARD_SFU_UDP_MIN_PORT..MAX_PORT)
EXPOSE 40000-49999/udp
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('SWITCHBOARD_PORT', '7880'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["switchboard"]
CMD ["serve"]

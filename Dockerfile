# ratelimitd image: build wheels in one stage, install them into a clean runtime stage.
#   docker build -t ratelimitd .
#   docker run -p 8081:8081 -v $PWD/examples:/etc/ratelimitd:ro ratelimitd
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lua lua
COPY ratelimitd ratelimitd
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home ratelimitd
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels ratelimitd && rm -rf /wheels
USER 10001
# Config files or directories are read from here unless --config says otherwise.
ENV RATELIMITD_CONFIG=/etc/ratelimitd \
    RATELIMITD_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8081 8080
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthcheck', timeout=1).status != 200)"]
ENTRYPOINT ["ratelimitd"]
CMD ["serve"]

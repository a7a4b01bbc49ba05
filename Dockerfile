# The Support Archive service, for docker-compose or a cluster. MongoDB runs elsewhere
# (ARCHIVE_MONGODB_URI), so the embedded mongod is not installed here.
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 archive
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
# Every package of the service (pyproject.toml's packages.find lists the same).
COPY ingest ingest
COPY store store
COPY retention retention
COPY search search
COPY exports exports
COPY scheduler scheduler
COPY api api
COPY web web
COPY service service
RUN pip install --no-cache-dir -c constraints.txt .
# The data directory holds the webhook journal (calls taken while MongoDB is away): mount a
# volume here so that it survives the container (docker-compose.yml does).
RUN install -d -o archive -m 0700 /home/archive/var

USER archive
ENV ARCHIVE_HTTP_HOST=0.0.0.0 \
    ARCHIVE_SMTP_HOST=0.0.0.0 \
    ARCHIVE_DATA_DIR=/home/archive/var \
    ARCHIVE_LOG_FORMAT=json
EXPOSE 8080 2525
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status != 200)"
CMD ["support-archive", "serve"]

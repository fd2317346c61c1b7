# syntax=docker/dockerfile:1
# One Dockerfile, one build target per connector (Airbyte's Python connector conventions):
#   docker build --target source-kinesis         -t airbyte/source-kinesis:0.1.5 .
#   docker build --target destination-collection -t airbyte/destination-collection:0.1.5 .
# Both start from Airbyte's python-connector-base image (Python 3.11, user `airbyte`, uid 1000) and run the
# connector's console script as the entrypoint, with AIRBYTE_ENTRYPOINT equal to it.
ARG BASE_IMAGE=docker.io/airbyte/python-connector-base:4.0.2@sha256:9fdb1888c4264cf6fee473649ecb593f56f58e5d0096a87ee0b231777e2e3e73

FROM ${BASE_IMAGE} AS base
USER root
WORKDIR /airbyte/integration_code
COPY setup.py README.md ./

# Each target installs its connector alone (setup.py's KINESIS_COLLECTIONS_TARGET): the source's image has no duckdb,
# pyarrow or psycopg, the destination's no boto3, and neither has the runner (kinesis-collection needs both).
FROM base AS source-kinesis
COPY source_kinesis ./source_kinesis
RUN KINESIS_COLLECTIONS_TARGET=source pip install --no-cache-dir . && rm -rf /root/.cache
ENV AIRBYTE_ENTRYPOINT="source-kinesis"
LABEL io.airbyte.name="airbyte/source-kinesis" \
      io.airbyte.version="0.1.5"
USER airbyte
ENTRYPOINT ["source-kinesis"]

FROM base AS destination-collection
COPY destination_collection ./destination_collection
RUN KINESIS_COLLECTIONS_TARGET=destination pip install --no-cache-dir . && rm -rf /root/.cache
# Tells the destination it runs in the image: DuckDB paths resolve under /local (Airbyte's mount) and may not escape it.
ENV AIRBYTE_ENTRYPOINT="destination-collection" \
    DESTINATION_COLLECTION_IN_DOCKER="1"
RUN mkdir -p /local && chown airbyte:airbyte /local
VOLUME /local
LABEL io.airbyte.name="airbyte/destination-collection" \
      io.airbyte.version="0.1.5"
USER airbyte
ENTRYPOINT ["destination-collection"]

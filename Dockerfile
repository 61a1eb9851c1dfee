# Builds Kepler and runs its test suite as root inside the container:
#   docker build -t kepler . && docker run --rm kepler
FROM rust:1-bookworm
WORKDIR /src
COPY . .
RUN scripts/test-env && cargo build --workspace --bins && cargo build --release --workspace --bins
CMD ["scripts/test"]

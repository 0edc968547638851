# tollgate for docker-compose.yml: release build, slim runtime.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/tollgate /tollgate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /tollgate /usr/local/bin/tollgate
ENTRYPOINT ["tollgate"]

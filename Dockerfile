# One image, both roles: /usr/local/bin/gatehouse (every command) and
# /usr/local/bin/gatehouse-sidecar (the proxy alone, built with the "sidecar"
# tag), from one source and one build, so the controller always injects the
# sidecar of its own version. The go build flags here match the Makefile's
# GO_BUILD; cmd/gatehouse's TestDockerfileMatchesMakefile keeps them in sync.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/gatehouse ./cmd/gatehouse && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -tags sidecar,nethttpomithttp2 -o /out/gatehouse-sidecar ./cmd/gatehouse

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/gatehouse /out/gatehouse-sidecar /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/gatehouse"]

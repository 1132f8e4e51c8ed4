# The oras container image: one static binary on an empty base, run as a non-root user.
#
# The build context is prepared by scripts/image.sh (which names every file below); it builds
# offline from a binary built beforehand, with no step that runs inside the image:
#
#   scripts/image.sh target/x86_64-unknown-linux-musl/release/oras localhost/oras:dev
#
# The binary must be statically linked (a musl build): scratch has no C library or loader.
FROM scratch

# The binary's path in the build context.
ARG BINARY=oras
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=unknown

LABEL org.opencontainers.image.title="oras" \
      org.opencontainers.image.description="Back up and restore OCI content (images, charts, SBOMs, signatures, any artifact) between registries and portable OCI layouts" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# TLS roots for registries with public certificates (the system roots are read from this file).
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# Names for user and group 65532, which scratch does not have.
COPY passwd /etc/passwd
COPY group /etc/group
COPY ${BINARY} /usr/local/bin/oras

ENV PATH=/usr/local/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    HOME=/home/nonroot
USER 65532:65532
ENTRYPOINT ["oras"]

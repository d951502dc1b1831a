// Package deploy holds what it takes to run the plurenet relay in
// production, and proves that every relay implementation speaks the same
// protocol.
//
//   - Dockerfile: a static plurenet binary in a distroless image on port
//     8080: plain ws:// behind a platform's TLS ingress, or wss:// itself
//     with a mounted certificate. Its "node" target is a node image
//     (plurenet up, userspace by default).
//   - compose/: a relay, its Redis and two members (tested, without a
//     Docker engine, in packaging/).
//   - azure/: Bicep and scripts for Azure Container Apps, with an optional
//     Azure Managed Redis backplane.
//   - vercel/: relay protocol v2 in Node.js (for Vercel Functions'
//     WebSocket support, or any Node host), with the Go relay's Redis
//     backplane design so Node and Go instances can share one Redis.
//
// The package has no Go API. Its tests run one conformance suite
// (docs/protocol.md, Part 1) against the Go relay in process and the Node
// relay as a child process, and relays of both kinds sharing a Redis; and
// they check the deployments as far as possible without the platforms: the
// Azure template's invariants and deploy.sh, the Vercel project and the
// Vercel CLI's offline build, the README's docker run line over wss://, and
// the image itself where a Docker engine answers.
package deploy

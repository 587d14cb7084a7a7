//! A local real Kubernetes cluster without Docker, and the end-to-end tests.

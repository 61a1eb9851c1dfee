//! Bridges to the tools people use besides Kepler: `import` reads their
//! process files into a kepler.yaml, `export` turns a baked config into
//! systemd units, a Nomad job or Kubernetes manifests.

pub mod export;
pub mod import;

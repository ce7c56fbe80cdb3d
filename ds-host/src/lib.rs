//! ds-host: the privileged daemon. So far: app packages (validation and
//! installation). Serving, state and lifecycle land with the host issue.

pub mod package;

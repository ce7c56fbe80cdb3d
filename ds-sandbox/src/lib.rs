//! ds-sandbox: builds the sandbox of one appspace.

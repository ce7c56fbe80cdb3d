//! dsctl's command line as a library, so that the packaging's generator
//! (`packaging/docgen`) writes the man page and the shell completions from
//! the same definition the binary parses.

pub mod cli;

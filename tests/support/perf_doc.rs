//! Rewrites one benchmark's section of `docs/performance.md`: what lies
//! between `<!-- NAME:start -->` and `<!-- NAME:end -->`. Shared by every
//! crate's benchmark through `#[path]` (a bench cannot depend on another
//! crate's bench code).

/// Replaces section `name` with `body` (which ends with a newline); says
/// so, or why not, on stderr.
pub fn rewrite(name: &str, body: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/performance.md");
    let (start, end) = (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    );
    let Ok(doc) = std::fs::read_to_string(path) else {
        eprintln!("{path} not found; figures printed above only");
        return;
    };
    let (Some(a), Some(b)) = (doc.find(&start), doc.find(&end)) else {
        eprintln!("{path} has no {name} markers; figures printed above only");
        return;
    };
    let updated = format!("{}{start}\n{body}{}", &doc[..a], &doc[b..]);
    match std::fs::write(path, updated) {
        Ok(()) => eprintln!("updated {path}"),
        Err(e) => eprintln!("writing {path}: {e}"),
    }
}

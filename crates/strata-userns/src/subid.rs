//! `/etc/subuid` and `/etc/subgid`: the id ranges a user may map.

use std::path::Path;

/// A range of subordinate ids: `count` ids from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIds {
    /// The first host id.
    pub start: u32,
    /// How many.
    pub count: u32,
}

/// The first range `file` gives the user (named or by numeric id, as
/// shadow-utils' `newuidmap` reads it); `None` when the file or the line is
/// missing.
pub(crate) fn lookup(file: &Path, name: Option<&str>, id: u32) -> Option<SubIds> {
    let text = std::fs::read_to_string(file).ok()?;
    parse(&text, name, id)
}

fn parse(text: &str, name: Option<&str>, id: u32) -> Option<SubIds> {
    let id = id.to_string();
    text.lines().find_map(|line| {
        let mut parts = line.trim().split(':');
        let who = parts.next()?;
        if who != id && Some(who) != name {
            return None;
        }
        let start = parts.next()?.parse().ok()?;
        let count: u32 = parts.next()?.parse().ok()?;
        (count > 0).then_some(SubIds { start, count })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_first_range_by_name_or_id() {
        let text =
            "alice:100000:65536\n# a comment\nbob:200000:0\n1002:300000:1000\nbob:400000:10\n";
        assert_eq!(
            parse(text, Some("alice"), 1000),
            Some(SubIds {
                start: 100_000,
                count: 65536
            })
        );
        // An empty range does not count; the next one does.
        assert_eq!(
            parse(text, Some("bob"), 1001),
            Some(SubIds {
                start: 400_000,
                count: 10
            })
        );
        assert_eq!(
            parse(text, None, 1002),
            Some(SubIds {
                start: 300_000,
                count: 1000
            })
        );
        assert_eq!(parse(text, Some("carol"), 1003), None);
    }
}

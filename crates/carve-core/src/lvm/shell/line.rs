//! One argv as one line of `lvm shell` input. The shell splits its input
//! with lvm2's own `lvm_split`: words are separated by white space, a word
//! may be wrapped whole in `'…'` or `"…"` (no escapes inside), and a word
//! starting with `#` outside quotes ends the line. So every argument is sent
//! quoted, and an argument no quoting can carry exactly (it holds both quote
//! characters, a line break or a NUL) is not sent at all: the caller runs
//! that command as a process of its own. Nothing here is a shell string: the
//! line is lvm's argv, word for word.

/// lvm2 reads at most this many words per line (`MAX_ARGS` in tools/lvm.c);
/// one more is "Too many arguments, sorry.". `lvm` itself is not counted here.
pub const MAX_WORDS: usize = 63;

/// Lines longer than this are run as processes: lvm's line editor has no
/// stated limit, and carve's own lines stay far below it.
pub const MAX_LINE: usize = 16 * 1024;

/// The line (without its newline) that makes `lvm shell` run `args`, or
/// `None` when `args` cannot be carried exactly.
pub fn encode(args: &[String]) -> Option<String> {
    if args.is_empty() || args.len() > MAX_WORDS {
        return None;
    }
    let mut line = String::new();
    for a in args {
        if a.contains(['\n', '\r', '\0']) {
            return None;
        }
        let quote = if !a.contains('\'') {
            '\''
        } else if !a.contains('"') {
            '"'
        } else {
            return None;
        };
        if !line.is_empty() {
            line.push(' ');
        }
        line.push(quote);
        line.push_str(a);
        line.push(quote);
    }
    (line.len() <= MAX_LINE).then_some(line)
}

/// `--devices A,B` as the shell takes it. lvm 2.03.16's shell frees the
/// `--devices` list with the command and reads it again in the next one (a
/// crash, SIGSEGV, seen in the UML guest after any command that had it), so
/// the same limit is sent as a device filter for this command only: accept
/// exactly these paths, reject everything else. A `--config` already in
/// `args` gets the filter prepended (lvm takes one `--config` per command).
/// `None` when a path holds a character a filter pattern cannot carry
/// without escapes.
pub fn devices_as_filter(args: &[String]) -> Option<Vec<String>> {
    let Some(at) = args.iter().position(|a| a == "--devices") else {
        return Some(args.to_vec());
    };
    let paths = args.get(at + 1)?;
    let mut patterns = Vec::new();
    for p in paths.split(',').filter(|p| !p.is_empty()) {
        patterns.push(format!("\"a|^{}$|\"", literal(p)?));
    }
    patterns.push("\"r|.*|\"".to_string());
    let filter = format!("devices/filter=[{}]", patterns.join(","));
    let mut out: Vec<String> = args[..at].iter().chain(&args[at + 2..]).cloned().collect();
    match out.iter().position(|a| a == "--config") {
        Some(c) if c + 1 < out.len() => out[c + 1] = format!("{filter} {}", out[c + 1]),
        _ => out
            .splice(1..1, ["--config".to_string(), filter])
            .for_each(drop),
    }
    Some(out)
}

/// A path as a regular expression matching only itself: every character
/// that is not a letter, digit or `/` in a bracket of its own.
fn literal(path: &str) -> Option<String> {
    let mut re = String::new();
    for c in path.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '/' => re.push(c),
            '"' | '|' | '\\' | ']' | '^' | '[' | '\'' => return None,
            c if c.is_control() => return None,
            c => {
                re.push('[');
                re.push(c);
                re.push(']');
            }
        }
    }
    Some(re)
}

/// lvm2's `lvm_split`, as lvm reads a line: the model [`encode`] is tested
/// against.
#[cfg(test)]
pub fn split(line: &str) -> Vec<String> {
    let b = line.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == b.len() || b[i] == b'#' {
            break;
        }
        let quote = (b[i] == b'\'' || b[i] == b'"').then(|| {
            i += 1;
            b[i - 1]
        });
        let start = i;
        while i < b.len() && quote.map_or(!b[i].is_ascii_whitespace(), |q| b[i] != q) {
            i += 1;
        }
        words.push(String::from_utf8_lossy(&b[start..i]).into_owned());
        i += 1;
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quotes_every_word() {
        let args = v(&[
            "lvremove",
            "--select",
            "lv_tags=x && lv_attr!~^o",
            "#vg/lv",
            "",
        ]);
        let line = encode(&args).unwrap();
        assert_eq!(
            line,
            "'lvremove' '--select' 'lv_tags=x && lv_attr!~^o' '#vg/lv' ''"
        );
        assert_eq!(split(&line), args);
    }

    #[test]
    fn a_single_quote_is_carried_in_double_quotes() {
        let args = v(&["lvs", "it's"]);
        assert_eq!(encode(&args).unwrap(), "'lvs' \"it's\"");
    }

    #[test]
    fn refuses_what_no_quoting_carries() {
        for bad in ["a'b\"c", "a\nb", "a\rb", "a\0b"] {
            assert_eq!(encode(&v(&["lvs", bad])), None, "{bad:?}");
        }
        assert_eq!(encode(&[]), None);
        assert_eq!(encode(&vec!["x".to_string(); MAX_WORDS + 1]), None);
        assert!(encode(&vec!["x".to_string(); MAX_WORDS]).is_some());
        assert_eq!(encode(&v(&["lvs", &"x".repeat(MAX_LINE)])), None);
    }

    #[test]
    fn devices_become_a_filter_merged_into_the_config() {
        let got = devices_as_filter(&v(&[
            "fullreport",
            "--devices",
            "/dev/loop0,/dev/md-1.x",
            "--config",
            "report/time_format=\"%s\"",
            "vg",
        ]))
        .unwrap();
        assert_eq!(
            got,
            v(&[
                "fullreport",
                "--config",
                "devices/filter=[\"a|^/dev/loop0$|\",\"a|^/dev/md[-]1[.]x$|\",\"r|.*|\"] report/time_format=\"%s\"",
                "vg",
            ])
        );
        let got = devices_as_filter(&v(&["lvremove", "--devices", "/dev/sda", "--yes", "vg/lv"]))
            .unwrap();
        assert_eq!(
            got,
            v(&[
                "lvremove",
                "--config",
                "devices/filter=[\"a|^/dev/sda$|\",\"r|.*|\"]",
                "--yes",
                "vg/lv"
            ])
        );
        assert_eq!(
            devices_as_filter(&v(&["version"])).unwrap(),
            v(&["version"])
        );
        assert_eq!(
            devices_as_filter(&v(&["lvs", "--devices", "/dev/a|b"])),
            None
        );
        assert_eq!(devices_as_filter(&v(&["lvs", "--devices"])), None);
    }

    proptest! {
        #![proptest_config(crate::fuzz::config(2048))]
        /// A path's pattern matches that path and no other (checked with a
        /// regex engine of the same basic syntax).
        #[test]
        fn a_device_pattern_matches_only_its_path(
            path in "/dev/[a-zA-Z0-9._+:@#%=~-]{1,12}",
            other in "/dev/[a-zA-Z0-9._+:@#%=~-]{1,12}",
        ) {
            let re = regex_lite::Regex::new(&format!("^{}$", literal(&path).unwrap())).unwrap();
            prop_assert!(re.is_match(&path));
            prop_assert_eq!(re.is_match(&other), other == path);
        }

        /// Whatever carve sends, lvm reads back word for word, or carve does
        /// not send it through the shell at all.
        #[test]
        fn lvm_reads_back_exactly_what_was_encoded(
            args in proptest::collection::vec(".{0,12}|[ '\"#a-z\\t]{0,8}", 1..70)
        ) {
            match encode(&args) {
                Some(line) => {
                    prop_assert!(!line.contains('\n'));
                    prop_assert_eq!(split(&line), args);
                }
                None => prop_assert!(
                    args.len() > MAX_WORDS
                        || args.iter().any(|a| a.contains(['\n', '\r', '\0'])
                            || (a.contains('\'') && a.contains('"')))
                ),
            }
        }
    }
}

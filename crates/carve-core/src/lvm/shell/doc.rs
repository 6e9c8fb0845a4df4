//! What `lvm shell` writes to its report descriptor: one JSON document per
//! command (lvmdbusd's command profile: reports and the command log as JSON),
//! ending with the shell's own status row. [`DocEnd`] finds where a document
//! ends in a byte stream without parsing it twice, and [`status`] and
//! [`messages`] read what carve needs from it.

use serde::de::IgnoredAny;
use serde::Deserialize;

/// Finds the end of one JSON object in a byte stream fed in pieces: it
/// tracks nesting and strings (with their escapes), so a brace inside a
/// message or an LV tag is not an end. Linear in the bytes fed.
#[derive(Debug, Default)]
pub struct DocEnd {
    depth: u32,
    started: bool,
    in_string: bool,
    escaped: bool,
    seen: usize,
}

/// The stream broke the protocol: not a JSON object where one must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotADocument(pub String);

impl DocEnd {
    /// Feeds the next bytes. `Ok(Some(n))`: the document ended after `n`
    /// bytes of everything fed so far.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, NotADocument> {
        for (i, &b) in bytes.iter().enumerate() {
            let at = self.seen + i;
            if !self.started {
                match b {
                    b'{' => {
                        self.started = true;
                        self.depth = 1;
                    }
                    b' ' | b'\t' | b'\n' | b'\r' => {}
                    _ => {
                        return Err(NotADocument(format!(
                            "byte {b:#04x} at {at} before a JSON object"
                        )))
                    }
                }
                continue;
            }
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.seen += i + 1;
                        return Ok(Some(self.seen));
                    }
                }
                _ => {}
            }
        }
        self.seen += bytes.len();
        Ok(None)
    }
}

#[derive(Deserialize)]
struct Doc {
    #[serde(default)]
    report: Option<IgnoredAny>,
    #[serde(default)]
    log: Vec<LogRow>,
}

#[derive(Deserialize)]
struct LogRow {
    #[serde(default)]
    log_type: String,
    #[serde(default)]
    log_context: String,
    #[serde(default)]
    log_message: String,
    #[serde(default)]
    log_ret_code: String,
}

/// How one command ended, from its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The exit code the same command would have had as a process.
    pub code: i32,
    /// The document carries a report (lvs, pvs, fullreport): its text is the
    /// command's output.
    pub has_report: bool,
}

/// The shell's status row of a command's document: lvm2 writes it last, with
/// the command's return code (1 is success, as `lvm_return_code` maps it).
pub fn status(doc: &str) -> Result<Status, NotADocument> {
    let d: Doc =
        serde_json::from_str(doc).map_err(|e| NotADocument(format!("invalid JSON: {e}")))?;
    let row = d
        .log
        .iter()
        .rev()
        .find(|r| r.log_context == "shell" && r.log_type == "status")
        .ok_or_else(|| NotADocument("no status row from the shell".into()))?;
    let ret: i32 = row.log_ret_code.parse().map_err(|_| {
        NotADocument(format!(
            "status row with return code {:?}",
            row.log_ret_code
        ))
    })?;
    Ok(Status {
        code: if ret == 1 { 0 } else { ret },
        has_report: d.report.is_some(),
    })
}

/// The messages of a `lastlog` document as the same command would have
/// printed them as a process: `print` rows to stdout, errors and warnings to
/// stderr, each on a line of its own, indented as lvm indents them.
pub fn messages(doc: &str) -> Result<(String, String), NotADocument> {
    let d: Doc =
        serde_json::from_str(doc).map_err(|e| NotADocument(format!("invalid JSON: {e}")))?;
    let (mut out, mut err) = (String::new(), String::new());
    for r in d.log {
        let to = match r.log_type.as_str() {
            "status" => continue,
            "print" => &mut out,
            _ => &mut err,
        };
        to.push_str("  ");
        to.push_str(&r.log_message);
        to.push('\n');
    }
    Ok((out, err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FAILED: &str = r#"  {
      "log": [
          {"log_seq_num":"3", "log_type":"status", "log_context":"shell", "log_object_type":"cmd", "log_object_name":"lvcreate", "log_object_id":"", "log_object_group":"", "log_object_group_id":"", "log_message":"failure", "log_errno":"0", "log_ret_code":"5"}
      ]
  }
"#;
    const LASTLOG: &str = r#"  {
      "log": [
          {"log_seq_num":"1", "log_type":"error", "log_context":"processing", "log_object_type":"vg", "log_object_name":"carve-thick", "log_message":"Logical Volume \"a1\" already exists in volume group \"carve-thick\"", "log_errno":"-1", "log_ret_code":"0"},
          {"log_seq_num":"2", "log_type":"print", "log_context":"processing", "log_message":"Logical volume \"x\" successfully removed.", "log_ret_code":"0"},
          {"log_seq_num":"3", "log_type":"status", "log_context":"shell", "log_object_type":"cmd", "log_object_name":"lvcreate", "log_message":"failure", "log_errno":"0", "log_ret_code":"5"}
      ]
  }
"#;

    #[test]
    fn reads_the_shell_status_as_an_exit_code() {
        assert_eq!(
            status(FAILED).unwrap(),
            Status {
                code: 5,
                has_report: false
            }
        );
        let ok = FAILED.replace("\"5\"", "\"1\"");
        assert_eq!(status(&ok).unwrap().code, 0);
        let report = r#"{"report":[{"lv":[]}],"log":[{"log_type":"status","log_context":"shell","log_ret_code":"1"}]}"#;
        assert_eq!(
            status(report).unwrap(),
            Status {
                code: 0,
                has_report: true
            }
        );
        assert!(status(r#"{"report":[]}"#).is_err(), "no status row");
        assert!(status(
            r#"{"log":[{"log_type":"status","log_context":"shell","log_ret_code":"x"}]}"#
        )
        .is_err());
    }

    #[test]
    fn lastlog_becomes_stdout_and_stderr() {
        let (out, err) = messages(LASTLOG).unwrap();
        assert_eq!(out, "  Logical volume \"x\" successfully removed.\n");
        assert_eq!(
            err,
            "  Logical Volume \"a1\" already exists in volume group \"carve-thick\"\n"
        );
    }

    /// Documents as lvm 2.03.16's shell wrote them (and broken ones): each
    /// ends where its object ends, `ok-<code>-*` read as that exit code,
    /// `bad-*` are protocol errors.
    #[test]
    fn corpus() {
        for (name, bytes) in crate::fuzz::corpus("lvm_shell_stream") {
            let mut e = DocEnd::default();
            let end = e.feed(&bytes);
            let text = String::from_utf8_lossy(&bytes);
            let got = match end.clone() {
                Ok(Some(n)) => status(&text[..n]).map(|s| s.code),
                Ok(None) => Err(NotADocument("no end".into())),
                Err(e) => Err(e),
            };
            match name.strip_prefix("ok-") {
                Some(rest) => {
                    let code: i32 = rest.split('-').next().unwrap().parse().unwrap();
                    assert_eq!(got, Ok(code), "{name}");
                    let n = end.unwrap().unwrap();
                    assert!(text[n..].trim().is_empty(), "{name}");
                }
                None => assert!(got.is_err(), "{name}: {got:?}"),
            }
        }
    }

    #[test]
    fn finds_the_end_across_pieces_and_strings() {
        let doc = r#" {"a":"}{\"]","b":[{"c":"\\"}]} trailing"#;
        let end = doc.find(" trailing").unwrap();
        for cut in 0..doc.len() {
            let mut e = DocEnd::default();
            let first = e.feed(&doc.as_bytes()[..cut]).unwrap();
            let got = first.or_else(|| e.feed(&doc.as_bytes()[cut..]).unwrap());
            assert_eq!(got, Some(end), "cut at {cut}");
        }
        assert!(DocEnd::default().feed(b"  lvm> ").is_err());
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            ".{0,10}".prop_map(serde_json::Value::String),
            "[{}\\[\\]\"\\\\]{0,6}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[a-z{}\"]{0,5}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(crate::fuzz::config(1024))]
        /// Any object serde writes, pretty or compact, cut anywhere, ends
        /// exactly where serde says it does.
        #[test]
        fn the_end_is_where_the_object_ends(
            v in proptest::collection::btree_map("[a-z]{0,4}", json_value(), 0..5),
            pretty in any::<bool>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let obj = serde_json::Value::Object(v.into_iter().collect());
            let text = if pretty { serde_json::to_string_pretty(&obj).unwrap() } else { obj.to_string() };
            let stream = format!("  {text}\n{{\"next\":1}}");
            let bytes = stream.as_bytes();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len())).collect();
            points.sort();
            let mut e = DocEnd::default();
            let mut from = 0;
            let mut found = None;
            for p in points.into_iter().chain([bytes.len()]) {
                if found.is_none() && p >= from {
                    found = e.feed(&bytes[from..p]).unwrap();
                    from = p;
                }
            }
            prop_assert_eq!(found, Some(2 + text.len()));
        }

        /// Arbitrary bytes never panic the scanner or the readers.
        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = DocEnd::default().feed(&bytes);
            let s = String::from_utf8_lossy(&bytes);
            let _ = status(&s);
            let _ = messages(&s);
        }
    }
}

//! fnmatch(3)-style globs (`*`, `?`, `[a-z]`, `[!x]`) and systemd's match
//! lists. Hand-written: the semantics needed are exactly fnmatch with no
//! flags, which is a few dozen lines; glob crates add path semantics.

/// fnmatch(pattern, s, 0): `*` and `?` also match `/`.
pub fn fnmatch(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    // Iterative matcher with single-star backtracking: linear-ish, no recursion.
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class(&p, pi, s[si]) {
                        if matched {
                            pi = next;
                            si += 1;
                            continue;
                        }
                    } else if s[si] == '[' {
                        // An unterminated class is a literal '['.
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
                '\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == s[si] {
                        pi += 2;
                        si += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[si] {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Match `c` against the bracket expression starting at `p[start] == '['`.
/// Returns (matched, index after the closing bracket), or None when the
/// bracket is not terminated.
fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            let end = p[i + 2];
            if ch <= c && c <= end {
                matched = true;
            }
            i += 3;
        } else {
            if ch == c {
                matched = true;
            }
            i += 1;
        }
    }
}

/// systemd's list test (`net_condition_test_strv`): an empty list matches
/// everything; any matching `!pattern` fails; if there are positive
/// patterns, one must match. `value` is None when the property is absent.
pub fn match_list(patterns: &[String], value: Option<&str>) -> bool {
    if patterns.is_empty() {
        return true;
    }
    let mut has_positive = false;
    let mut matched = false;
    for pat in patterns {
        let (invert, pat) = match pat.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, pat.as_str()),
        };
        if !invert {
            has_positive = true;
        }
        if let Some(v) = value {
            if fnmatch(pat, v) {
                if invert {
                    return false;
                }
                matched = true;
            }
        }
    }
    if has_positive {
        matched
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn globs() {
        assert!(fnmatch("eth*", "eth0"));
        assert!(fnmatch("*", ""));
        assert!(fnmatch("en?1", "ens1"));
        assert!(!fnmatch("en?1", "ens11"));
        assert!(fnmatch("en[ops]*", "enp0s3"));
        assert!(!fnmatch("en[!ops]*", "enp0s3"));
        assert!(fnmatch("veth[0-9]", "veth7"));
        assert!(fnmatch("a*b*c", "aXXbYYc"));
        assert!(!fnmatch("a*b*c", "aXXbYY"));
        assert!(fnmatch("[", "["));
        assert!(fnmatch("x\\*", "x*"));
        assert!(!fnmatch("x\\*", "xy"));
    }

    #[test]
    fn lists() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(match_list(&[], Some("eth0")));
        assert!(match_list(&l(&["eth*", "en*"]), Some("ens3")));
        assert!(!match_list(&l(&["eth*"]), Some("ens3")));
        assert!(!match_list(&l(&["!veth*"]), Some("veth0")));
        assert!(match_list(&l(&["!veth*"]), Some("eth0")));
        assert!(match_list(&l(&["!*"]), None));
        assert!(!match_list(&l(&["!*"]), Some("veth")));
        assert!(!match_list(&l(&["*"]), None));
    }

    proptest! {
        #[test]
        fn fnmatch_never_panics(p in "[a-c*?\\[\\]!^\\\\-]{0,12}", s in "[a-c\\[\\]-]{0,12}") {
            let _ = fnmatch(&p, &s);
        }
    }
}

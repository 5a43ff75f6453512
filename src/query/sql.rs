//! The `table@v12` form: a table as of a version, written where a table name goes.

/// Quote every `name@v<digits>` outside string literals and quoted identifiers so the
/// SQL parser takes it as one table name (`"name@v12"`).
pub(super) fn quote_versioned_names(sql: &str) -> String {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            let end = closing_quote(&chars, i);
            out.extend(&chars[i..end]);
            i = end;
            continue;
        }
        if is_ident_start(c) && (i == 0 || !is_ident_char(chars[i - 1])) {
            let mut j = i;
            while j < chars.len() && is_ident_char(chars[j]) {
                j += 1;
            }
            let digits = version_suffix(&chars, j);
            if digits > 0 {
                let end = j + 2 + digits;
                out.push('"');
                out.extend(&chars[i..end]);
                out.push('"');
                i = end;
            } else {
                out.extend(&chars[i..j]);
                i = j;
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Split `name@v12` into the table name and the version.
pub(super) fn split_versioned(name: &str) -> (&str, Option<u64>) {
    match name.rsplit_once("@v") {
        Some((base, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            (base, v.parse().ok())
        }
        _ => (name, None),
    }
}

/// Digits of a `@v<digits>` at `at` (0 when there is none).
fn version_suffix(chars: &[char], at: usize) -> usize {
    if chars.get(at) != Some(&'@') || chars.get(at + 1) != Some(&'v') {
        return 0;
    }
    let digits = chars[at + 2..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    let followed_by_ident = chars
        .get(at + 2 + digits)
        .is_some_and(|c| is_ident_char(*c));
    if followed_by_ident {
        0
    } else {
        digits
    }
}

/// Index just past the quote closing the one at `start` (a doubled quote escapes).
fn closing_quote(chars: &[char], start: usize) -> usize {
    let q = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == q {
            if chars.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    chars.len()
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_names_are_quoted_outside_literals() {
        assert_eq!(
            quote_versioned_names("SELECT count(*) FROM calls@v12 JOIN calls c USING (crime_id)"),
            "SELECT count(*) FROM \"calls@v12\" JOIN calls c USING (crime_id)"
        );
        assert_eq!(
            quote_versioned_names("SELECT 'calls@v1', \"x@v2\" FROM t@v3x"),
            "SELECT 'calls@v1', \"x@v2\" FROM t@v3x"
        );
        assert_eq!(split_versioned("calls@v12"), ("calls", Some(12)));
        assert_eq!(split_versioned("calls"), ("calls", None));
        assert_eq!(split_versioned("a@vx"), ("a@vx", None));
    }
}

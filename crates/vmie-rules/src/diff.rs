//! Unified diffs of the files a run changes, for the report.

/// A unified diff (`---`/`+++` headers, `@@` hunks with 3 lines of context)
/// of `old` and `new`, both named `path`. Files too large to compare line
/// by line (over 4 million line pairs) are shown as wholly replaced.
pub fn unified(path: &str, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = if a.len().saturating_mul(b.len()) <= 4_000_000 {
        lcs_ops(&a, &b)
    } else {
        a.iter()
            .map(|_| Op::Del)
            .chain(b.iter().map(|_| Op::Add))
            .collect()
    };
    // Walk ops, tracking line numbers; group into hunks with context 3.
    let mut lines: Vec<(char, &str, usize, usize)> = Vec::new(); // (tag, text, a_line, b_line) 1-based positions before the line
    let (mut i, mut j) = (0usize, 0usize);
    for op in &ops {
        match op {
            Op::Keep => {
                lines.push((' ', a[i], i, j));
                i += 1;
                j += 1;
            }
            Op::Del => {
                lines.push(('-', a[i], i, j));
                i += 1;
            }
            Op::Add => {
                lines.push(('+', b[j], i, j));
                j += 1;
            }
        }
    }
    let mut out = format!("--- a{path}\n+++ b{path}\n");
    let changed: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.0 != ' ')
        .map(|(k, _)| k)
        .collect();
    if changed.is_empty() {
        return String::new();
    }
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(3);
        let mut end = changed[k] + 3;
        while k + 1 < changed.len() && changed[k + 1] <= end + 3 {
            k += 1;
            end = changed[k] + 3;
        }
        let end = end.min(lines.len() - 1);
        let hunk = &lines[start..=end];
        let a_start = hunk[0].2;
        let b_start = hunk[0].3;
        let a_len = hunk.iter().filter(|l| l.0 != '+').count();
        let b_len = hunk.iter().filter(|l| l.0 != '-').count();
        out.push_str(&format!(
            "@@ -{},{a_len} +{},{b_len} @@\n",
            if a_len == 0 { a_start } else { a_start + 1 },
            if b_len == 0 { b_start } else { b_start + 1 }
        ));
        for l in hunk {
            out.push(l.0);
            out.push_str(l.1);
            out.push('\n');
        }
        k += 1;
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Keep,
    Del,
    Add,
}

fn lcs_ops(a: &[&str], b: &[&str]) -> Vec<Op> {
    // Trim common prefix and suffix first: config edits are local.
    let pre = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    let (n, m) = (ma.len(), mb.len());
    let mut dp = vec![0u32; (n + 1) * (m + 1)];
    for x in (0..n).rev() {
        for y in (0..m).rev() {
            dp[x * (m + 1) + y] = if ma[x] == mb[y] {
                dp[(x + 1) * (m + 1) + y + 1] + 1
            } else {
                dp[(x + 1) * (m + 1) + y].max(dp[x * (m + 1) + y + 1])
            };
        }
    }
    let mut ops = vec![Op::Keep; pre];
    let (mut x, mut y) = (0, 0);
    while x < n || y < m {
        if x < n && y < m && ma[x] == mb[y] {
            ops.push(Op::Keep);
            x += 1;
            y += 1;
        } else if y < m && (x == n || dp[x * (m + 1) + y + 1] > dp[(x + 1) * (m + 1) + y]) {
            ops.push(Op::Add);
            y += 1;
        } else {
            ops.push(Op::Del);
            x += 1;
        }
    }
    ops.extend(std::iter::repeat_n(Op::Keep, suf));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_diff() {
        let d = unified(
            "/etc/x",
            "a\nb\nc\nd\ne\nf\ng\nh\n",
            "a\nb\nc\nD\ne\nf\ng\nh\n",
        );
        assert_eq!(
            d,
            "--- a/etc/x\n+++ b/etc/x\n@@ -1,7 +1,7 @@\n a\n b\n c\n-d\n+D\n e\n f\n g\n"
        );
        assert_eq!(unified("/x", "same\n", "same\n"), "");
        let d = unified("/x", "", "new\n");
        assert_eq!(d, "--- a/x\n+++ b/x\n@@ -0,0 +1,1 @@\n+new\n");
    }
}

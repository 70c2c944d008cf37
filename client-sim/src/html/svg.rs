//! Small helpers to write SVG and HTML by hand: escaping and a few shapes. The page is
//! generated in one pass as text, so no DOM library is needed.

use std::fmt::Write as _;

/// `s` escaped for HTML/SVG text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Where a text is anchored horizontally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Middle => "middle",
            Self::End => "end",
        }
    }
}

/// A `<text>` element with class `class`.
pub(crate) fn text(out: &mut String, x: f64, y: f64, anchor: Anchor, class: &str, s: &str) {
    let _ = write!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{}" class="{class}">{}</text>"#,
        anchor.as_str(),
        esc(s)
    );
}

/// A straight line with class `class`.
pub(crate) fn line(out: &mut String, x1: f64, y1: f64, x2: f64, y2: f64, class: &str) {
    let _ = write!(
        out,
        r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" class="{class}"/>"#
    );
}

/// A filled arrowhead pointing along the x axis (right when `right`) with its tip at (x, y).
pub(crate) fn arrowhead(out: &mut String, x: f64, y: f64, right: bool, class: &str) {
    let back = if right { x - 8.0 } else { x + 8.0 };
    let _ = write!(
        out,
        r#"<polygon points="{x:.1},{y:.1} {back:.1},{:.1} {back:.1},{:.1}" class="{class}"/>"#,
        y - 4.0,
        y + 4.0
    );
}

/// A cross (a drop) centred at (x, y).
pub(crate) fn cross(out: &mut String, x: f64, y: f64, class: &str) {
    let d = 6.0;
    let _ = write!(
        out,
        r#"<path d="M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}" class="{class}"/>"#,
        x - d,
        y - d,
        x + d,
        y + d,
        x - d,
        y + d,
        x + d,
        y - d
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        let mut s = String::new();
        text(&mut s, 1.0, 2.0, Anchor::End, "t", "a<b");
        assert_eq!(
            s,
            r#"<text x="1.0" y="2.0" text-anchor="end" class="t">a&lt;b</text>"#
        );
    }

    #[test]
    fn arrowheads_point_the_right_way() {
        let mut s = String::new();
        arrowhead(&mut s, 100.0, 10.0, true, "h");
        assert!(
            s.contains(r#"points="100.0,10.0 92.0,6.0 92.0,14.0""#),
            "{s}"
        );
        s.clear();
        arrowhead(&mut s, 100.0, 10.0, false, "h");
        assert!(s.contains("108.0,6.0"), "{s}");
    }
}

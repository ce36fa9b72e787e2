//! A hand-written SVG bar chart: per row, duvisor's and QEMU's median seconds side by side,
//! with the duvisor/QEMU ratio.

use std::fmt::Write;

use crate::stats::{format_ratio, format_secs, ratio};

pub struct ChartRow {
    pub label: String,
    pub duvisor: Option<f64>,
    pub qemu: Option<f64>,
    /// Shown instead of bars when a side has no time (e.g. "n/a (no virtio-blk yet)").
    pub note: Option<String>,
}

pub const DUVISOR_COLOR: &str = "#2a6fdb";
pub const QEMU_COLOR: &str = "#e07b39";

/// Escapes text for XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// The chart: `title`, then `subtitle` lines, then one group of bars per row.
pub fn render(title: &str, subtitle: &[String], rows: &[ChartRow]) -> String {
    const W: f64 = 980.0;
    const LABEL_W: f64 = 330.0;
    const BAR_H: f64 = 16.0;
    const GAP: f64 = 3.0;
    const ROW_H: f64 = 2.0 * BAR_H + GAP + 22.0;
    const RIGHT: f64 = 170.0;
    let top = 40.0 + 16.0 * subtitle.len() as f64 + 28.0;
    let height = top + ROW_H * rows.len() as f64 + 30.0;
    let max = rows
        .iter()
        .flat_map(|r| [r.duvisor, r.qemu])
        .flatten()
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let scale = (W - LABEL_W - RIGHT) / max;

    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{W}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="12" y="26" font-size="17" font-weight="bold">{}</text>"#,
        xml_escape(title)
    );
    for (i, line) in subtitle.iter().enumerate() {
        let _ = writeln!(
            s,
            r##"<text x="12" y="{}" fill="#555">{}</text>"##,
            46.0 + 16.0 * i as f64,
            xml_escape(line)
        );
    }
    // Legend.
    let ly = top - 18.0;
    let _ = writeln!(
        s,
        r#"<rect x="{LABEL_W}" y="{}" width="12" height="12" fill="{DUVISOR_COLOR}"/><text x="{}" y="{}">duvisor (median)</text>"#,
        ly - 10.0,
        LABEL_W + 16.0,
        ly
    );
    let _ = writeln!(
        s,
        r#"<rect x="{}" y="{}" width="12" height="12" fill="{QEMU_COLOR}"/><text x="{}" y="{}">qemu-system-riscv64 -M virt (median)</text>"#,
        LABEL_W + 140.0,
        ly - 10.0,
        LABEL_W + 156.0,
        ly
    );
    for (i, r) in rows.iter().enumerate() {
        let y0 = top + ROW_H * i as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LABEL_W - 10.0,
            y0 + BAR_H + 2.0,
            xml_escape(&r.label)
        );
        match (r.duvisor, r.qemu) {
            (Some(d), Some(q)) => {
                for (k, (v, color, who)) in [(d, DUVISOR_COLOR, "duvisor"), (q, QEMU_COLOR, "qemu")]
                    .into_iter()
                    .enumerate()
                {
                    let y = y0 + k as f64 * (BAR_H + GAP);
                    let w = (v * scale).max(1.0);
                    let _ = writeln!(
                        s,
                        r#"<rect class="bar {who}" x="{LABEL_W}" y="{y}" width="{w:.1}" height="{BAR_H}" fill="{color}"><title>{who}: {}</title></rect>"#,
                        xml_escape(&format_secs(v))
                    );
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{}">{}</text>"#,
                        LABEL_W + w + 5.0,
                        y + BAR_H - 4.0,
                        xml_escape(&format_secs(v))
                    );
                }
                if let Some(x) = ratio(Some(d), Some(q)) {
                    let _ = writeln!(
                        s,
                        r#"<text class="ratio" x="{}" y="{}" text-anchor="end" font-weight="bold">{}</text>"#,
                        W - 12.0,
                        y0 + BAR_H + 2.0,
                        xml_escape(&format!("duvisor/QEMU {}", format_ratio(x)))
                    );
                }
            }
            _ => {
                let note = r.note.clone().unwrap_or_else(|| "no result".into());
                let _ = writeln!(
                    s,
                    r##"<text x="{LABEL_W}" y="{}" fill="#888" font-style="italic">{}</text>"##,
                    y0 + BAR_H + 2.0,
                    xml_escape(&note)
                );
            }
        }
    }
    let _ = writeln!(
        s,
        r##"<text x="12" y="{}" fill="#888" font-size="11">Shorter is better. Ratio = duvisor median / QEMU median (below 1 means duvisor is faster).</text>"##,
        height - 10.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small well-formedness check: tags nest and close, attributes are quoted, entities
    /// are the predefined ones. Returns the element names in document order.
    pub fn check_xml(doc: &str) -> Result<Vec<String>, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut elements = Vec::new();
        let mut rest = doc;
        let mut roots = 0;
        while let Some(i) = rest.find(['<', '&']) {
            let text = &rest[..i];
            if !stack.is_empty() || text.trim().is_empty() {
            } else {
                return Err(format!("text outside the root: {text:?}"));
            }
            rest = &rest[i..];
            if rest.starts_with('&') {
                let end = rest.find(';').ok_or("unterminated entity")?;
                let ent = &rest[1..end];
                if !["amp", "lt", "gt", "quot", "apos"].contains(&ent) && !ent.starts_with('#') {
                    return Err(format!("unknown entity &{ent};"));
                }
                rest = &rest[end + 1..];
                continue;
            }
            let end = rest.find('>').ok_or("unterminated tag")?;
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            if let Some(t) = tag.strip_prefix('?') {
                if !t.ends_with('?') {
                    return Err("bad processing instruction".into());
                }
            } else if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or("close without open")?;
                if open != name.trim() {
                    return Err(format!("</{name}> closes <{open}>"));
                }
            } else {
                let self_closing = tag.ends_with('/');
                let body = tag.trim_end_matches('/');
                let name = body.split_whitespace().next().ok_or("empty tag")?;
                if body.matches('"').count() % 2 != 0 || body.contains('<') {
                    return Err(format!("bad attributes in <{body}>"));
                }
                if stack.is_empty() {
                    roots += 1;
                }
                elements.push(name.to_string());
                if !self_closing {
                    stack.push(name.to_string());
                }
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed: {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(elements)
    }

    #[test]
    fn chart_is_xml_with_two_bars_per_timed_row() {
        let rows = vec![
            ChartRow {
                label: "boot <1 vCPU> & off".into(),
                duvisor: Some(3.0),
                qemu: Some(2.0),
                note: None,
            },
            ChartRow {
                label: "cpu".into(),
                duvisor: Some(10.0),
                qemu: Some(12.5),
                note: None,
            },
            ChartRow {
                label: "blk".into(),
                duvisor: None,
                qemu: None,
                note: Some("n/a (no virtio-blk yet)".into()),
            },
        ];
        let svg = render("t & t", &["load \"1.0\"".into()], &rows);
        let elements = check_xml(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(elements[0], "svg");
        assert_eq!(svg.matches(r#"class="bar duvisor""#).count(), 2);
        assert_eq!(svg.matches(r#"class="bar qemu""#).count(), 2);
        assert_eq!(svg.matches(r#"class="ratio""#).count(), 2);
        assert!(svg.contains("1.50×"));
        assert!(svg.contains("0.80×"));
        assert!(svg.contains("n/a (no virtio-blk yet)"));
    }

    #[test]
    fn checker_rejects_broken_xml() {
        assert!(check_xml("<a><b></a></b>").is_err());
        assert!(check_xml("<a>x & y</a>").is_err());
        assert!(check_xml("<a/><b/>").is_err());
        assert!(check_xml("<a x=\"1\"><b/></a>").is_ok());
    }
}

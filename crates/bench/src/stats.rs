//! Small numeric helpers: medians and ratio labels.

/// The median of `xs` (mean of the two middle values for an even count); `None` when empty.
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// duvisor time / QEMU time.
pub fn ratio(duvisor: Option<f64>, qemu: Option<f64>) -> Option<f64> {
    match (duvisor, qemu) {
        (Some(d), Some(q)) if q > 0.0 => Some(d / q),
        _ => None,
    }
}

/// `0.87×`, `1.20×`, `14.3×`: how many times longer duvisor took than QEMU.
pub fn format_ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

/// `bytes` moved in `secs` as MiB/s.
pub fn format_rate(bytes: u64, secs: f64) -> String {
    let r = bytes as f64 / (1u64 << 20) as f64 / secs;
    if r >= 100.0 {
        format!("{r:.0} MiB/s")
    } else {
        format!("{r:.1} MiB/s")
    }
}

/// Seconds with a precision that suits their size.
pub fn format_secs(s: f64) -> String {
    if s >= 100.0 {
        format!("{s:.0} s")
    } else if s >= 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.2} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(format_ratio(1.5), "1.50×");
        assert_eq!(format_ratio(0.456), "0.46×");
        assert_eq!(format_ratio(14.26), "14.3×");
        assert_eq!(format_secs(2.5), "2.50 s");
        assert_eq!(format_secs(31.26), "31.3 s");
        assert_eq!(format_secs(314.6), "315 s");
        assert_eq!(format_rate(64 << 20, 2.0), "32.0 MiB/s");
        assert_eq!(format_rate(128 << 20, 0.5), "256 MiB/s");
    }
}

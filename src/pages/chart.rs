//! Charts drawn on the server as SVG: no script, nothing fetched.

use crate::domain::money::Credits;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// Height of the drawing area, in SVG units.
const HEIGHT: f64 = 120.0;
/// Width of one day's bar and its gap.
const STEP: f64 = 10.0;
const BAR: f64 = 8.0;

/// One coloured part of a bar.
pub struct Segment {
    pub x: String,
    pub y: String,
    pub height: String,
    /// `series-N`: the colour of its group.
    pub class: String,
    pub title: String,
}

/// A stacked bar chart: one bar per day, one colour per group.
pub struct StackedBars {
    pub width: String,
    pub segments: Vec<Segment>,
    /// (class, group) in colour order.
    pub legend: Vec<(String, String)>,
    pub max: Credits,
}

/// Stacked bars of `points` ((day index, group, credits)) over `days` days, scaled to the
/// tallest day. Credits are exact; only the drawing is in floating point.
pub fn stacked(days: usize, groups: &[String], points: &[(usize, String, Credits)]) -> StackedBars {
    let mut totals = vec![Decimal::ZERO; days];
    for (day, _, credits) in points {
        totals[*day] += credits.value();
    }
    let max = totals.iter().copied().max().unwrap_or_default();
    let scale = |d: Decimal| match max.to_f64() {
        Some(m) if m > 0.0 => d.to_f64().unwrap_or(0.0) / m * HEIGHT,
        _ => 0.0,
    };
    let mut stacked = vec![Decimal::ZERO; days];
    let mut segments = Vec::new();
    for (day, group, credits) in points {
        let class = groups.iter().position(|g| g == group).unwrap_or(0) % 6;
        let bottom = scale(stacked[*day]);
        stacked[*day] += credits.value();
        let top = scale(stacked[*day]);
        segments.push(Segment {
            x: format!("{:.1}", *day as f64 * STEP + (STEP - BAR) / 2.0),
            y: format!("{:.2}", HEIGHT - top),
            height: format!("{:.2}", (top - bottom).max(0.5)),
            class: format!("series-{class}"),
            title: format!("{group}: {credits}"),
        });
    }
    StackedBars {
        width: format!("{:.0}", days as f64 * STEP),
        segments,
        legend: groups
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("series-{}", i % 6), g.clone()))
            .collect(),
        max: Credits::new(max).unwrap_or_default(),
    }
}

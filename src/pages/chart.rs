//! Charts drawn on the server as SVG: no script, nothing fetched.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// Height of the drawing area, in SVG units.
const HEIGHT: f64 = 120.0;
/// Width of one bar and its gap.
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

/// A stacked bar chart: one bar per slot (a day, a month), one colour per group; positive
/// amounts stack up from the axis, negative ones down from it.
pub struct StackedBars {
    pub width: String,
    pub segments: Vec<Segment>,
    /// (class, group) in colour order.
    pub legend: Vec<(String, String)>,
    /// The tallest bar above the axis.
    pub max: Decimal,
    /// Where the axis is, from the top.
    pub axis_y: String,
}

/// Stacked bars of `points` ((slot, group, amount)) over `slots` slots, scaled to the tallest
/// bars above and below the axis. Amounts are exact; only the drawing is in floating point.
pub fn stacked(
    slots: usize,
    groups: &[String],
    points: &[(usize, String, Decimal)],
) -> StackedBars {
    let mut up = vec![Decimal::ZERO; slots];
    let mut down = vec![Decimal::ZERO; slots];
    for (slot, _, amount) in points {
        if amount.is_sign_negative() {
            down[*slot] -= amount;
        } else {
            up[*slot] += amount;
        }
    }
    let max = up.iter().copied().max().unwrap_or_default();
    let min = down.iter().copied().max().unwrap_or_default();
    let span = (max + min).to_f64().unwrap_or(0.0);
    let scale = |d: Decimal| {
        if span > 0.0 {
            d.to_f64().unwrap_or(0.0) / span * HEIGHT
        } else {
            0.0
        }
    };
    let axis = scale(max);
    let mut above = vec![Decimal::ZERO; slots];
    let mut below = vec![Decimal::ZERO; slots];
    let mut segments = Vec::new();
    for (slot, group, amount) in points {
        if amount.is_zero() {
            continue;
        }
        let class = groups.iter().position(|g| g == group).unwrap_or(0) % 6;
        let (y, height) = if amount.is_sign_negative() {
            let top = scale(below[*slot]);
            below[*slot] -= amount;
            (axis + top, scale(below[*slot]) - top)
        } else {
            let bottom = scale(above[*slot]);
            above[*slot] += amount;
            let top = scale(above[*slot]);
            (axis - top, top - bottom)
        };
        segments.push(Segment {
            x: format!("{:.1}", *slot as f64 * STEP + (STEP - BAR) / 2.0),
            y: format!("{y:.2}"),
            height: format!("{:.2}", height.max(0.5)),
            class: format!("series-{class}"),
            title: format!("{group}: {amount}"),
        });
    }
    StackedBars {
        width: format!("{:.0}", slots as f64 * STEP),
        segments,
        legend: groups
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("series-{}", i % 6), g.clone()))
            .collect(),
        max,
        axis_y: format!("{axis:.2}"),
    }
}

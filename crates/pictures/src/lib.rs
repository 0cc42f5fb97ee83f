//! Pictures a user opens in any browser: the training curve (`training_curve.svg`, redrawn
//! after every epoch so it can be watched mid-run) and the piano roll of a generated piece
//! (`generated_music.svg`).
//!
//! Reads nothing from disk; each function returns the SVG text for its caller to write.
//!
//! Key design decision: SVG written directly rather than through a plotting crate. A
//! plotting crate such as plotters must measure text with a font — a system font through
//! font-kit and fontconfig, or a font file shipped with us — before it can draw one label.
//! SVG leaves fonts to the viewer, needs no dependency, and the files stay small and
//! diffable. Everything here is lines, rectangles and text on a fixed canvas.

use artifacts::EpochRecord;
use music::TimedNote;
use std::fmt::Write;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 480.0;
/// Plot area margins: left, right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (70.0, 150.0, 40.0, 50.0);

/// Maps data coordinates to the plot area.
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        MARGIN.0 + (x - self.x.0) / (self.x.1 - self.x.0).max(1e-12) * (WIDTH - MARGIN.0 - MARGIN.1)
    }

    fn py(&self, y: f64) -> f64 {
        HEIGHT - MARGIN.3 - (y - self.y.0) / (self.y.1 - self.y.0).max(1e-12) * (HEIGHT - MARGIN.2 - MARGIN.3)
    }
}

fn open(svg: &mut String, title: &str) {
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" font-size="16" text-anchor="middle">{}</text>
"#,
        WIDTH / 2.0,
        escape(title)
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Axes with `ticks` labelled grid lines on each, and the axis titles.
fn axes(svg: &mut String, frame: &Frame, x_title: &str, y_title: &str, x_ticks: &[f64], y_ticks: &[f64]) {
    let (left, right) = (frame.px(frame.x.0), frame.px(frame.x.1));
    let (bottom, top) = (frame.py(frame.y.0), frame.py(frame.y.1));
    for &x in x_ticks {
        let px = frame.px(x);
        let _ = writeln!(svg, r##"<line x1="{px:.1}" y1="{top:.1}" x2="{px:.1}" y2="{bottom:.1}" stroke="#e4e4e4"/>"##);
        let _ = writeln!(
            svg,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 16.0,
            tick_label(x)
        );
    }
    for &y in y_ticks {
        let py = frame.py(y);
        let _ = writeln!(svg, r##"<line x1="{left:.1}" y1="{py:.1}" x2="{right:.1}" y2="{py:.1}" stroke="#e4e4e4"/>"##);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            py + 4.0,
            tick_label(y)
        );
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{left:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="black"/>"#,
        right - left,
        bottom - top
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0,
        HEIGHT - 12.0,
        escape(x_title)
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
        (top + bottom) / 2.0,
        (top + bottom) / 2.0,
        escape(y_title)
    );
}

fn tick_label(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 { format!("{}", value.round()) } else { format!("{value:.2}") }
}

/// About `count` round tick values covering `low..=high`.
fn ticks(low: f64, high: f64, count: usize) -> Vec<f64> {
    let raw = (high - low).max(1e-9) / count as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    // Multiples of the step, computed from their index so no rounding error accumulates.
    let first = (low / step).ceil() as i64;
    (first..).map(|k| k as f64 * step).take_while(|v| *v <= high + step * 1e-9).collect()
}

fn polyline(svg: &mut String, frame: &Frame, points: &[(f64, f64)], colour: &str, width: f64, opacity: f64) {
    if points.is_empty() {
        return;
    }
    let coordinates: Vec<String> =
        points.iter().map(|&(x, y)| format!("{:.1},{:.1}", frame.px(x), frame.py(y))).collect();
    let _ = writeln!(
        svg,
        r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="{width}" stroke-opacity="{opacity}"/>"#,
        coordinates.join(" ")
    );
}

fn legend(svg: &mut String, entries: &[(&str, &str)]) {
    for (i, (colour, label)) in entries.iter().enumerate() {
        let y = MARGIN.2 + 14.0 + i as f64 * 20.0;
        let x = WIDTH - MARGIN.1 + 14.0;
        let _ =
            writeln!(svg, r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{colour}" stroke-width="3"/>"#, x + 22.0);
        let _ = writeln!(svg, r#"<text x="{}" y="{}">{}</text>"#, x + 28.0, y + 4.0, escape(label));
    }
}

/// The training curve: loss per step (faint) and the train and validation loss per epoch.
///
/// `steps` holds `(epoch position, loss)` for individual steps, the position counting
/// fractions of an epoch (1.5 = halfway through epoch 2); it may be empty.
pub fn training_curve(history: &[EpochRecord], steps: &[(f64, f32)]) -> String {
    let train: Vec<(f64, f64)> = history.iter().map(|e| (e.epoch as f64, f64::from(e.train_loss))).collect();
    let validation: Vec<(f64, f64)> =
        history.iter().filter_map(|e| e.validation_loss.map(|v| (e.epoch as f64, f64::from(v)))).collect();
    let step_points: Vec<(f64, f64)> = steps.iter().map(|&(x, y)| (x, f64::from(y))).collect();
    let all_y = train.iter().chain(&validation).chain(&step_points).map(|p| p.1).filter(|y| y.is_finite());
    let (low, high) = all_y.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), y| (l.min(y), h.max(y)));
    let (low, high) = if low.is_finite() { (0f64.min(low), high * 1.05) } else { (0.0, 1.0) };
    let last_epoch = history.last().map_or(1.0, |e| e.epoch as f64).max(1.0);
    let frame = Frame { x: (0.0, last_epoch), y: (low, high) };

    let mut svg = String::new();
    open(&mut svg, "Training loss (cross-entropy, nats per token)");
    axes(&mut svg, &frame, "epoch", "loss", &ticks(0.0, last_epoch, 10), &ticks(low, high, 6));
    polyline(&mut svg, &frame, &step_points, "#1f77b4", 1.0, 0.35);
    polyline(&mut svg, &frame, &train, "#1f77b4", 2.5, 1.0);
    polyline(&mut svg, &frame, &validation, "#d62728", 2.5, 1.0);
    legend(&mut svg, &[("#1f77b4", "train (per epoch)"), ("#d62728", "validation"), ("#9ec3e0", "train (per step)")]);
    svg.push_str("</svg>\n");
    svg
}

/// Keys' heights of the sustain pedal's lane below the keyboard, and the gap above it.
const PEDAL_LANE: f64 = 3.0;
const PEDAL_GAP: f64 = 1.0;
/// The fill of a press in that lane: a grey no velocity is drawn in.
const PEDAL_COLOUR: &str = "#8a8a8a";

/// The piano roll: time across, the 88 keys (A0–C8) up, one bar per note coloured by its
/// velocity; grey lines mark the music's own bar lines (`bar_lines`, in seconds) when
/// given, else every second. With `pedal` (`(down, up)` in seconds) not empty, a lane
/// below the keyboard shows where the sustain pedal is down, as a DAW's controller lane
/// does: the notes are drawn as written, and the pedal is what holds them on.
pub fn piano_roll(notes: &[TimedNote], pedal: &[(f64, f64)], bar_lines: &[f64], title: &str) -> String {
    let end = notes
        .iter()
        .map(|n| n.onset_seconds + n.duration_seconds)
        .chain(pedal.iter().map(|&(_, up)| up))
        .fold(1.0, f64::max);
    let lowest = if pedal.is_empty() { 20.5 } else { 20.5 - PEDAL_GAP - PEDAL_LANE };
    let frame = Frame { x: (0.0, end), y: (lowest, 108.5) };
    let mut svg = String::new();
    open(&mut svg, title);
    let seconds: Vec<f64>;
    let lines = if bar_lines.is_empty() || bar_lines.len() > 400 {
        seconds = (1..end.ceil() as usize).map(|s| s as f64).collect();
        &seconds[..]
    } else {
        bar_lines
    };
    let x_ticks = ticks(0.0, end, 12);
    // C of every octave, labelled like the rest of the project (C4 = middle C = 60).
    let c_keys: Vec<f64> = (24..=108).step_by(12).map(f64::from).collect();
    axes(&mut svg, &frame, "seconds", "pitch (C of each octave marked)", &x_ticks, &[]);
    for &c in &c_keys {
        let py = frame.py(c);
        let _ = writeln!(
            svg,
            r##"<line x1="{}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#d0d0d0"/>"##,
            MARGIN.0,
            frame.px(end)
        );
        let label = artifacts::pitch_name(c as u8);
        let _ =
            writeln!(svg, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#, MARGIN.0 - 6.0, py + 4.0);
    }
    for &bar in lines.iter().filter(|&&bar| bar > 0.0 && bar < end) {
        let px = frame.px(bar);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{}" x2="{px:.1}" y2="{:.1}" stroke="#ececec"/>"##,
            MARGIN.2,
            HEIGHT - MARGIN.3
        );
    }
    let key_height = (frame.py(20.5) - frame.py(21.5)).max(1.0);
    for note in notes.iter().filter(|n| (21..=108).contains(&n.pitch)) {
        let x = frame.px(note.onset_seconds);
        let width = (frame.px(note.onset_seconds + note.duration_seconds) - x).max(1.0);
        let y = frame.py(f64::from(note.pitch) + 0.5);
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{key_height:.1}" fill="{}"/>"#,
            velocity_colour(note.velocity)
        );
    }
    if !pedal.is_empty() {
        let (lane_top, lane_bottom) = (frame.py(lowest + PEDAL_LANE), frame.py(lowest));
        let keyboard_bottom = frame.py(20.5);
        let _ = writeln!(
            svg,
            r##"<line x1="{}" y1="{keyboard_bottom:.1}" x2="{:.1}" y2="{keyboard_bottom:.1}" stroke="#b0b0b0"/>"##,
            MARGIN.0,
            frame.px(end)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">pedal</text>"#,
            MARGIN.0 - 6.0,
            lane_bottom - 1.0
        );
        for &(down, up) in pedal {
            let x = frame.px(down);
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{lane_top:.1}" width="{:.1}" height="{:.1}" fill="{PEDAL_COLOUR}"/>"#,
                (frame.px(up) - x).max(1.0),
                lane_bottom - lane_top
            );
        }
    }
    for (i, (velocity, label)) in [(20u8, "pp"), (64, "mf"), (120, "ff")].iter().enumerate() {
        let y = MARGIN.2 + 14.0 + i as f64 * 20.0;
        let x = WIDTH - MARGIN.1 + 14.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{}" width="22" height="8" fill="{}"/>"#,
            y - 4.0,
            velocity_colour(*velocity)
        );
        let _ = writeln!(svg, r#"<text x="{}" y="{}">velocity {velocity} ({label})</text>"#, x + 28.0, y + 4.0);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Two normalised histograms side by side, one bar pair per label (e.g. generated music
/// against the validation pieces).
pub fn histogram_pair(title: &str, labels: &[String], a: (&str, &[f64]), b: (&str, &[f64])) -> String {
    let high = a.1.iter().chain(b.1).copied().fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let frame = Frame { x: (0.0, labels.len() as f64), y: (0.0, high) };
    let mut svg = String::new();
    open(&mut svg, title);
    axes(&mut svg, &frame, "", "share", &[], &ticks(0.0, high, 5));
    let slot = frame.px(1.0) - frame.px(0.0);
    for (i, label) in labels.iter().enumerate() {
        for (k, (values, colour)) in [(a.1, "#1f77b4"), (b.1, "#d62728")].iter().enumerate() {
            let value = values.get(i).copied().unwrap_or(0.0);
            let x = frame.px(i as f64) + slot * (0.1 + 0.4 * k as f64);
            let (top, bottom) = (frame.py(value), frame.py(0.0));
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{colour}"/>"#,
                slot * 0.4,
                bottom - top
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
            frame.px(i as f64 + 0.5),
            HEIGHT - MARGIN.3 + 16.0,
            escape(label)
        );
    }
    legend(&mut svg, &[("#1f77b4", a.0), ("#d62728", b.0)]);
    svg.push_str("</svg>\n");
    svg
}

/// Quiet notes light blue, loud ones dark red.
fn velocity_colour(velocity: u8) -> String {
    let t = f64::from(velocity.min(127)) / 127.0;
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(120.0, 170.0), mix(180.0, 20.0), mix(230.0, 40.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: usize, train: f32, validation: f32) -> EpochRecord {
        EpochRecord { epoch, train_loss: train, validation_loss: Some(validation), validation_accuracy: Some(0.5) }
    }

    #[test]
    fn the_curve_has_a_line_per_series_and_labelled_axes() {
        let svg = training_curve(&[epoch(1, 4.0, 4.2), epoch(2, 3.0, 3.5)], &[(0.5, 4.5), (1.0, 4.0)]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains(">epoch<") && svg.contains(">loss<") && svg.contains("validation"));
    }

    #[test]
    fn the_roll_draws_every_note_on_the_keyboard() {
        let note = |pitch, onset_seconds| TimedNote { pitch, velocity: 80, onset_seconds, duration_seconds: 0.5 };
        let svg = piano_roll(&[note(60, 0.0), note(64, 0.5), note(5, 1.0)], &[], &[0.0, 2.0], "a <test>");
        // Three legend swatches, the frame, the white background, and two notes on the keyboard.
        assert_eq!(svg.matches("<rect").count(), 3 + 1 + 1 + 2);
        assert!(svg.contains("a &lt;test&gt;") && svg.contains(">C4<") && !svg.contains(">pedal<"));
    }

    #[test]
    fn the_roll_draws_the_pedal_in_a_lane_below_the_keyboard() {
        let note = TimedNote { pitch: 21, velocity: 80, onset_seconds: 0.0, duration_seconds: 0.5 };
        let svg = piano_roll(&[note], &[(0.0, 1.5), (1.5, 3.0)], &[], "pedalled");
        assert_eq!(svg.matches("<rect").count(), 3 + 1 + 1 + 1 + 2);
        // The lane lies wholly below the lowest key's bar, and the roll reaches the last lift.
        let top_of = |fill: &str| -> Vec<f64> {
            svg.lines()
                .filter(|line| line.starts_with("<rect") && line.contains(&format!(r#"fill="{fill}""#)))
                .filter_map(|line| line.split(" y=\"").nth(1)?.split('"').next()?.parse().ok())
                .collect()
        };
        let (key, lane) = (top_of(&velocity_colour(80)), top_of(PEDAL_COLOUR));
        assert_eq!((key.len(), lane.len()), (1, 2), "{svg}");
        assert!(lane.iter().all(|&y| y > key[0] + 1.0), "{key:?} {lane:?}");
        assert!(svg.contains(">pedal<") && svg.contains(">3<"));
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.0, 1.0, 4), vec![0.0, 0.5, 1.0]);
        assert_eq!(ticks(0.0, 1.0, 6), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
    }
}

//! The bundled sample corpus: our own text transcriptions of public-domain piano pieces
//! (`data/scores/*.score`), rendered to the MIDI files in `data/` that `make` trains on.
//!
//! Reads `.score` files, writes `.mid` files (through `compose`'s MIDI writer, so the corpus
//! and the generated music are written by the same code).
//!
//! Key design decision: the scores are plain text in a tiny notation, one line per hand,
//! rather than MIDI made in some editor. Anyone can read, check and correct them in a
//! diff, and the MIDI files are reproducible from them byte for byte.
//!
//! # The notation
//!
//! ```text
//! title: Minuet in G major
//! composer: Christian Petzold
//! tempo: 120                   quarter notes per minute
//! meter: 3/4                    time signature (default 4/4)
//! pickup: 1                     quarter notes before the first bar line (default 0)
//! R: mf d5/4 g4/8 a4 b4 c5 |   right hand: pitch, octave, /note value (sticky)
//! L: [g3 b3]/2 a3/4 |          left hand: [chords], r = rest, | = bar line (ignored)
//! R: (e5/16 d#5)*4             ( … )*n repeats; a trailing . dots a value: a4/8.
//! ```
//!
//! Each voice label keeps its own time cursor, so lines of one hand continue each other
//! (a repeat may span them).
//! Dynamics `pp p mp mf f ff` set the velocity of the following notes of that voice.

use music::Note;
use std::collections::BTreeMap;

/// A parsed score: its metadata and every note of every voice.
#[derive(Debug)]
pub struct Score {
    pub title: String,
    pub composer: String,
    pub tempo_bpm: f64,
    /// The time signature, `(numerator, denominator)`.
    pub meter: (u8, u8),
    /// Quarter notes of an upbeat before the first full bar.
    pub pickup_quarters: f64,
    pub notes: Vec<Note>,
    /// Where each voice ends, in quarter notes: equal for a well-formed score.
    pub voice_ends: Vec<(String, f64)>,
}

/// `"3/4"` as (3, 4): a numerator of 1–16 over 1, 2, 4, 8 or 16.
fn parse_meter(text: &str) -> Option<(u8, u8)> {
    music::TimeSignature::parse(text).filter(|&(numerator, denominator)| numerator <= 16 && denominator <= 16)
}

impl Score {
    /// The score as the MIDI writer takes it: its notes, in its metre (an upbeat is a short
    /// bar of its own, as MIDI files of scores write it) at its tempo.
    pub fn to_music(&self) -> music::Score {
        let (numerator, denominator) = self.meter;
        let mut metre = music::Metre::steady(numerator, denominator, self.tempo_bpm);
        // The parser holds an upbeat to whole sixteenths under 16 quarter notes.
        if let Some((numerator, denominator)) = music::TimeSignature::of_sixteenths((self.pickup_quarters * 4.0) as u32)
        {
            metre.signatures[0].at_quarters = self.pickup_quarters;
            metre.signatures.insert(0, music::TimeSignature { at_quarters: 0.0, numerator, denominator });
        }
        music::Score { notes: self.notes.clone(), metre, pedal: Vec::new() }
    }
}

/// Where a voice stands while its lines are read.
struct VoiceCursor {
    /// The score's tempo, which turns quarter notes into seconds.
    tempo_bpm: f64,
    time: f64,
    duration: f64,
    velocity: u8,
}

/// Parses a `.score` text. Errors name the line and the token.
pub fn parse_score(text: &str) -> Result<Score, String> {
    let mut score = Score {
        title: String::new(),
        composer: String::new(),
        tempo_bpm: 100.0,
        meter: (4, 4),
        pickup_quarters: 0.0,
        notes: Vec::new(),
        voice_ends: Vec::new(),
    };
    // A voice's tokens from all its lines, each with its line number, played at the end so
    // a repeat may span lines.
    let mut voices: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('%').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |message: &str| format!("line {}: {message}", number + 1);
        let (label, body) = line.split_once(':').ok_or_else(|| at("expected `label: …`"))?;
        let body = body.trim();
        match label.trim() {
            "title" => score.title = body.to_owned(),
            "composer" => score.composer = body.to_owned(),
            "tempo" => score.tempo_bpm = body.parse().map_err(|_| at(&format!("bad tempo `{body}`")))?,
            "meter" => score.meter = parse_meter(body).ok_or_else(|| at(&format!("bad meter `{body}`")))?,
            "pickup" => {
                score.pickup_quarters =
                    body.parse().ok().filter(|q: &f64| (0.0..16.0).contains(q) && (q * 4.0).fract() == 0.0).ok_or_else(
                        || at(&format!("bad pickup `{body}`: quarter notes, a whole number of sixteenths")),
                    )?
            }
            voice => {
                let tokens = voices.entry(voice.to_owned()).or_default();
                tokens.extend(tokenize(body).into_iter().map(|t| (number + 1, t)));
            }
        }
    }
    for (voice, tokens) in voices {
        let mut cursor = VoiceCursor { tempo_bpm: score.tempo_bpm, time: 0.0, duration: 1.0, velocity: 72 };
        play(&tokens, &mut cursor, &mut score.notes)
            .map_err(|(line, message)| format!("line {line} ({voice}): {message}"))?;
        score.voice_ends.push((voice, cursor.time));
    }
    score.notes.sort_by(|a, b| a.onset_quarters.total_cmp(&b.onset_quarters).then(a.pitch.cmp(&b.pitch)));
    Ok(score)
}

/// Splits a line into tokens, keeping `[…]` chords and `(`/`)*n` as single tokens.
fn tokenize(body: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_chord = false;
    for c in body.chars() {
        match c {
            '[' => {
                in_chord = true;
                current.push(c);
            }
            ']' => {
                in_chord = false;
                current.push(c);
            }
            '(' if !in_chord => tokens.push("(".to_owned()),
            ')' if !in_chord => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
                current.push(')');
            }
            c if c.is_whitespace() && !in_chord => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// Plays tokens into `notes`, advancing the voice's cursor.
fn play(tokens: &[(usize, String)], cursor: &mut VoiceCursor, notes: &mut Vec<Note>) -> Result<(), (usize, String)> {
    let mut i = 0;
    while i < tokens.len() {
        let (line, token) = (tokens[i].0, tokens[i].1.as_str());
        let fail = |message: String| (line, message);
        if token == "(" {
            // Find the matching `)*n`, counting nested groups.
            let mut depth = 1;
            let mut end = i + 1;
            while end < tokens.len() {
                if tokens[end].1 == "(" {
                    depth += 1;
                } else if tokens[end].1.starts_with(")*") {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                end += 1;
            }
            let count: usize = tokens
                .get(end)
                .and_then(|t| t.1[2..].parse().ok())
                .ok_or_else(|| fail("`(` without a matching `)*n`".into()))?;
            for _ in 0..count {
                play(&tokens[i + 1..end], cursor, notes)?;
            }
            i = end + 1;
            continue;
        }
        i += 1;
        if token == "|" {
            continue;
        }
        if let Some(velocity) = dynamic(token) {
            cursor.velocity = velocity;
            continue;
        }
        let (pitch_part, duration_part) = match token.rsplit_once('/') {
            Some((p, d)) if !p.ends_with(']') || p.starts_with('[') => (p, Some(d)),
            _ => (token, None),
        };
        if let Some(text) = duration_part {
            cursor.duration = parse_duration(text).ok_or_else(|| fail(format!("bad note value in `{token}`")))?;
        }
        let pitches: Vec<u8> = if pitch_part == "r" {
            Vec::new()
        } else if let Some(inner) = pitch_part.strip_prefix('[').and_then(|p| p.strip_suffix(']')) {
            inner
                .split_whitespace()
                .map(parse_pitch)
                .collect::<Option<_>>()
                .ok_or_else(|| fail(format!("bad chord `{token}`")))?
        } else {
            vec![parse_pitch(pitch_part).ok_or_else(|| fail(format!("bad token `{token}`")))?]
        };
        for pitch in pitches {
            notes.push(Note::of_score(pitch, cursor.velocity, cursor.time, cursor.duration, cursor.tempo_bpm));
        }
        cursor.time += cursor.duration;
    }
    Ok(())
}

fn dynamic(token: &str) -> Option<u8> {
    Some(match token {
        "pp" => 36,
        "p" => 50,
        "mp" => 62,
        "mf" => 74,
        "f" => 90,
        "ff" => 106,
        _ => return None,
    })
}

/// `4` → 1 quarter, `8` → ½, `2.` → 3 quarters (a dot adds half).
fn parse_duration(text: &str) -> Option<f64> {
    let (digits, dotted) = match text.strip_suffix('.') {
        Some(d) => (d, true),
        None => (text, false),
    };
    let value: f64 = digits.parse().ok().filter(|v: &f64| [1.0, 2.0, 4.0, 8.0, 16.0, 32.0].contains(v))?;
    let quarters = 4.0 / value;
    Some(if dotted { quarters * 1.5 } else { quarters })
}

/// `c4` → 60, `f#3` → 54, `bb2` → 46, `c-1` → 0.
fn parse_pitch(text: &str) -> Option<u8> {
    let mut chars = text.chars();
    let class = match chars.next()? {
        'c' => 0,
        'd' => 2,
        'e' => 4,
        'f' => 5,
        'g' => 7,
        'a' => 9,
        'b' => 11,
        _ => return None,
    };
    let rest = chars.as_str();
    let (accidental, octave) = if let Some(o) = rest.strip_prefix('#') {
        (1, o)
    } else if let Some(o) = rest.strip_prefix('b').filter(|o| !o.is_empty()) {
        (-1, o)
    } else {
        (0, rest)
    };
    let octave: i32 = octave.parse().ok()?;
    u8::try_from((octave + 1) * 12 + class + accidental).ok().filter(|p| *p <= 127)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_voices_chords_repeats_and_dynamics() {
        let score =
            parse_score("title: T\ncomposer: C\ntempo: 90\nR: f c5/8 d5 | [e5 g5]/4.\nL: p (c3/16 g3)*2 r/4\nR: b4\n")
                .unwrap();
        assert_eq!(score.tempo_bpm, 90.0);
        let got: Vec<(u8, f64, f64, u8)> =
            score.notes.iter().map(|n| (n.pitch, n.onset_quarters, n.duration_quarters, n.velocity)).collect();
        assert_eq!(
            got,
            vec![
                (48, 0.0, 0.25, 50),
                (72, 0.0, 0.5, 90),
                (55, 0.25, 0.25, 50),
                (48, 0.5, 0.25, 50),
                (74, 0.5, 0.5, 90),
                (55, 0.75, 0.25, 50),
                (76, 1.0, 1.5, 90),
                (79, 1.0, 1.5, 90),
                (71, 2.5, 1.5, 90),
            ]
        );
    }

    /// Every bundled score parses and its hands end together: a missing or extra note
    /// value in one hand would shift everything after it.
    #[test]
    fn bundled_scores_are_well_formed() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/scores");
        let mut count = 0;
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            let score = parse_score(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let (first, end) = &score.voice_ends[0];
            for (voice, other) in &score.voice_ends {
                assert!(
                    (other - end).abs() < 1e-9,
                    "{}: voice {voice} ends at {other}, {first} at {end}",
                    path.display()
                );
            }
            count += 1;
        }
        assert!(count >= 8, "expected at least 8 scores, found {count}");
    }

    #[test]
    fn pitch_spelling() {
        assert_eq!(parse_pitch("c4"), Some(60));
        assert_eq!(parse_pitch("f#3"), Some(54));
        assert_eq!(parse_pitch("bb2"), Some(46));
        assert_eq!(parse_pitch("b3"), Some(59));
        assert_eq!(parse_pitch("c-1"), Some(0));
        assert_eq!(parse_pitch("h4"), None);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_score("title: x\nR: c4/3\n").unwrap_err();
        assert!(err.starts_with("line 2"), "{err}");
        assert!(parse_score("R: (c4 d4\n").is_err());
    }
}

//! Reading MIDI: the bytes of a standard MIDI file in, [`Note`]s out, by fixed rules (see
//! [`notes_of_midi`]), under caps that bound the memory any file can take.
//!
//! Key design decision: all tracks of a file are merged into one time-ordered event stream
//! before notes are paired. Program changes, tempo changes and note-offs may sit in a
//! different track from the notes they affect (format 1 files do this all the time), so
//! pairing per track would get programs and durations wrong.

use crate::metre::{Metre, PedalPress, Score, Tempo, TimeSignature};
use crate::note::{Note, PIANO_KEYS};
use midly::{MetaMessage, MidiMessage, Timing, TrackEventKind};
use serde::{Deserialize, Serialize};

/// The channel General MIDI reserves for drums (channel 10, counted from 1).
const DRUM_CHANNEL: u8 = 9;
/// The controller number of the sustain (damper) pedal.
pub(crate) const SUSTAIN_PEDAL: midly::num::u7 = midly::num::u7::new(64);
/// Tempo when a file sets none: 120 beats per minute.
const DEFAULT_MICROS_PER_QUARTER: f64 = 500_000.0;

/// What the sustain pedal (controller 64) does to notes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sustain {
    /// A key released while the pedal is down rings on until the pedal lifts or the key is
    /// struck again, as on a piano.
    Apply,
    /// Notes end when their key is released.
    Ignore,
    /// Notes end when their key is released, and the pedal is kept as events of its own
    /// ([`crate::metre::PedalPress`]), for an encoding that writes it (`beats`): a score's
    /// notes as written, and its pedal marks.
    Events,
}

/// How a file is read: the caps and the rules that are settings (`[extract]` in
/// `pipeline.toml` holds them for the pipeline).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReadOptions {
    /// Files with more tracks, events (of all kinds) or notes than these are refused.
    pub max_tracks: usize,
    pub max_events: usize,
    pub max_notes: usize,
    pub sustain: Sustain,
    /// Notes longer than this many seconds are cut to it.
    pub max_note_seconds: f64,
    /// Silences longer than this many seconds are shortened to it.
    pub max_rest_seconds: f64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_tracks: 1024,
            max_events: 4_000_000,
            max_notes: 1_000_000,
            sustain: Sustain::Apply,
            max_note_seconds: 30.0,
            max_rest_seconds: 60.0,
        }
    }
}

/// How a note started.
struct Onset {
    tick: u64,
    seconds: f64,
    quarters: f64,
    pitch: u8,
    velocity: u8,
    program: u8,
}

/// No note: an empty entry in the tables of note places.
const SILENT: u32 = u32::MAX;

/// The note that started at `onset` on `channel` and ended at `end_tick` (`end` in
/// seconds and quarter notes), or `None` if it is dropped, as counted in `facts`.
fn finish(
    onset: &Onset,
    channel: u8,
    (end_tick, end): (u64, (f64, f64)),
    options: &ReadOptions,
    facts: &mut MidiFacts,
) -> Option<Note> {
    let (mut end_seconds, mut end_quarters) = end;
    if !PIANO_KEYS.contains(&onset.pitch) {
        facts.off_keyboard += 1;
        return None;
    }
    if end_tick <= onset.tick {
        facts.zero_length += 1;
        return None;
    }
    if end_seconds - onset.seconds > options.max_note_seconds {
        facts.shortened += 1;
        let quarters_per_second = (end_quarters - onset.quarters) / (end_seconds - onset.seconds);
        end_seconds = onset.seconds + options.max_note_seconds;
        end_quarters = onset.quarters + options.max_note_seconds * quarters_per_second;
    }
    Some(Note {
        pitch: onset.pitch,
        velocity: onset.velocity,
        channel,
        program: onset.program,
        onset_seconds: onset.seconds,
        duration_seconds: end_seconds - onset.seconds,
        onset_quarters: onset.quarters,
        duration_quarters: end_quarters - onset.quarters,
    })
}

/// A file's notes in the order they were struck: how each started, and the note itself
/// once it has ended (`None` while it sounds, or if it was dropped). A note is known by its
/// place here; the order of places is onset order, so no sort is needed at the end.
struct Struck {
    onsets: Vec<Onset>,
    notes: Vec<Option<Note>>,
}

impl Struck {
    fn with_capacity(capacity: usize) -> Self {
        Struck { onsets: Vec::with_capacity(capacity), notes: Vec::with_capacity(capacity) }
    }

    /// Records a note-on; returns the note's place.
    fn strike(&mut self, onset: Onset) -> u32 {
        self.onsets.push(onset);
        self.notes.push(None);
        (self.onsets.len() - 1) as u32
    }

    /// Ends the note at `place` on `channel` at `end` (see [`finish`]); nothing for `SILENT`.
    fn end(&mut self, place: u32, channel: u8, end: (u64, (f64, f64)), options: &ReadOptions, facts: &mut MidiFacts) {
        if place != SILENT {
            let place = place as usize;
            self.notes[place] = finish(&self.onsets[place], channel, end, options, facts);
        }
    }

    /// The notes kept, in the order they were struck.
    fn into_notes(self) -> Vec<Note> {
        self.notes.into_iter().flatten().collect()
    }
}

/// Converts MIDI ticks to seconds and quarter notes.
struct Clock {
    /// Quarter notes per tick (metrical files) or `None` for SMPTE time code.
    quarters_per_tick: Option<f64>,
    /// Tempo segments `(start tick, seconds at start, seconds per tick)`, sorted by tick.
    segments: Vec<(u64, f64, f64)>,
    /// The segment of the last tick asked for.
    current: usize,
}

impl Clock {
    fn new(timing: Timing, mut tempo_changes: Vec<(u64, u32)>) -> Result<Clock, String> {
        match timing {
            Timing::Metrical(ticks) => {
                let ticks_per_quarter = f64::from(ticks.as_int());
                if ticks_per_quarter == 0.0 {
                    return Err("invalid header: 0 ticks per quarter note".into());
                }
                // A stable sort keeps file order for tempo changes at the same tick; the last wins.
                tempo_changes.sort_by_key(|&(tick, _)| tick);
                let seconds_per_tick = |micros: f64| micros / 1e6 / ticks_per_quarter;
                let mut segments = vec![(0u64, 0.0f64, seconds_per_tick(DEFAULT_MICROS_PER_QUARTER))];
                for (tick, micros) in tempo_changes {
                    let &(start, seconds, rate) = segments.last().expect("segments start non-empty");
                    let at = seconds + (tick - start) as f64 * rate;
                    let new = (tick, at, seconds_per_tick(f64::from(micros.max(1))));
                    if tick == start {
                        *segments.last_mut().expect("non-empty") = new;
                    } else {
                        segments.push(new);
                    }
                }
                Ok(Clock { quarters_per_tick: Some(1.0 / ticks_per_quarter), segments, current: 0 })
            }
            Timing::Timecode(fps, subframes) => {
                let ticks_per_second = f64::from(fps.as_f32()) * f64::from(subframes);
                if ticks_per_second <= 0.0 {
                    return Err("invalid header: 0 SMPTE subframes per frame".into());
                }
                Ok(Clock { quarters_per_tick: None, segments: vec![(0, 0.0, 1.0 / ticks_per_second)], current: 0 })
            }
        }
    }

    /// Quarter notes at `tick`, any tick in any order.
    fn quarters_of(&self, tick: u64) -> f64 {
        match self.quarters_per_tick {
            Some(q) => tick as f64 * q,
            None => tick as f64 * self.segments[0].2 * 2.0,
        }
    }

    /// The tempo map in quarter notes (time code files: a steady 120 BPM).
    fn tempos(&self) -> Vec<Tempo> {
        match self.quarters_per_tick {
            Some(q) => self
                .segments
                .iter()
                .map(|&(tick, _, seconds_per_tick)| Tempo {
                    at_quarters: tick as f64 * q,
                    bpm: 60.0 * q / seconds_per_tick,
                })
                .collect(),
            None => vec![Tempo { at_quarters: 0.0, bpm: 120.0 }],
        }
    }

    /// `(seconds, quarter notes)` at `tick`, which must not be earlier than at the previous
    /// call: the events are read in tick order, so the tempo segment is found by stepping
    /// forward from the last one (files with hundreds of tempo changes are common).
    fn at(&mut self, tick: u64) -> (f64, f64) {
        while self.segments.get(self.current + 1).is_some_and(|&(start, _, _)| start <= tick) {
            self.current += 1;
        }
        let (start, seconds, rate) = self.segments[self.current];
        let seconds = seconds + (tick - start) as f64 * rate;
        // Time code files have no beat; they are read as if at 120 BPM (2 quarters a second).
        (seconds, self.quarters_per_tick.map_or(seconds * 2.0, |q| tick as f64 * q))
    }
}

/// Extracts the notes of a standard MIDI file's bytes, sorted by (onset, pitch); notes with the
/// same onset and pitch (on different channels) in the order they were struck.
///
/// Rules, applied identically to every file:
/// - Format 0 and 1 are read; format 2 (independent sequences) is rejected.
/// - Channel 10 (drums) is dropped; every other channel and track is kept.
/// - Tempo changes from any track apply to all tracks; without one, 120 BPM.
/// - A note-on with velocity 0 is a note-off.
/// - A note-on for a pitch already sounding on that channel ends the sounding note there
///   and starts a new one; a note-off with no sounding note is ignored.
/// - Notes still sounding when the file ends end at its last event (of any track, the
///   end-of-track marker included); zero-length notes are
///   dropped.
/// - Sustain pedal (`extract.sustain = "apply"`): while controller 64 is at 64 or more on a
///   channel, a released key rings on until the pedal lifts or the same pitch is struck again.
///   With `"events"` the presses are kept instead, as the score's `pedal`: the pedal is down
///   while it is down on any channel.
/// - Notes outside the 88 piano keys (A0–C8) are dropped; notes longer than
///   `extract.max_note_seconds` are cut to it; a silence longer than
///   `extract.max_rest_seconds` (before the first note, or after every note so far has
///   ended) is shortened to it. All are counted in the stage summary.
/// - A file with no notes left is rejected.
///
/// Lenient by design, as players are: a RIFF (`.rmi`) wrapper is unwrapped, bytes after the
/// last track are ignored, and a damaged track is read up to its first unreadable event
/// (midly's non-strict mode), so a truncated file keeps the notes before the damage.
pub fn notes_of_midi(bytes: &[u8], options: &ReadOptions) -> Result<Vec<Note>, String> {
    read_midi(bytes, options).map(|(score, _)| score.notes)
}

/// Facts about a file beyond its notes, for the stage report.
#[derive(Clone, Copy, Debug, Default)]
pub struct MidiFacts {
    /// Tempo meta events, across all tracks.
    pub tempo_changes: usize,
    /// Sustain pedal presses (controller 64 going to 64 or more).
    pub pedal_presses: usize,
    /// Notes dropped because their pitch is not one of the 88 piano keys.
    pub off_keyboard: usize,
    /// Notes dropped because they end where they start.
    pub zero_length: usize,
    /// Notes cut to `extract.max_note_seconds`.
    pub shortened: usize,
    /// Silences shortened to `extract.max_rest_seconds`.
    pub rests_shortened: usize,
    /// Time signature meta events, across all tracks.
    pub time_signatures: usize,
    /// Time signatures repaired (see [`metre_of`]): impossible ones dropped, ones in the
    /// middle of a bar given a short bar before them or moved to the next bar line.
    pub signatures_repaired: usize,
}

/// A MIDI channel event at an absolute tick: one entry of a file's merged event stream.
type TimedEvent = (u64, u8, MidiMessage);

thread_local! {
    /// Each thread's buffer for the merged event stream, reused from file to file: a fresh
    /// one per file cost a tenth of extraction in page faults.
    static EVENTS: std::cell::RefCell<Vec<TimedEvent>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`notes_of_midi`], with the piece's [`Metre`] and pedal (a [`Score`]) and the
/// [`MidiFacts`] the report needs.
pub fn read_midi(bytes: &[u8], options: &ReadOptions) -> Result<(Score, MidiFacts), String> {
    EVENTS.with_borrow_mut(|events| {
        events.clear();
        let result = read_midi_with(bytes, options, events);
        // A huge file's buffer is not kept for the rest of the run.
        events.shrink_to(1 << 20);
        result
    })
}

/// Shortens every silence longer than `max_rest` seconds to `max_rest`, moving the notes
/// after it earlier. A silence is the time before the first note, or from the end of every
/// note so far to the next onset. In quarter notes the cut is rounded down to whole bars,
/// and the metre's signatures and tempos after it move with the notes, so a downbeat stays
/// a downbeat; pedal presses move with them. Returns how many silences were shortened.
/// `notes` must be in onset order.
fn shorten_rests(notes: &mut [Note], metre: &mut Metre, pedal: &mut Vec<PedalPress>, max_rest: f64) -> usize {
    let (mut cut_seconds, mut cut_quarters) = (0.0, 0.0);
    let (mut end_seconds, mut end_quarters) = (0.0f64, 0.0f64);
    // (where the silence starts, in the file's own quarter notes; quarter notes removed)
    let mut cuts: Vec<(f64, f64)> = Vec::new();
    for note in notes.iter_mut() {
        let gap = note.onset_seconds - cut_seconds - end_seconds;
        if gap > max_rest {
            let share = (gap - max_rest) / gap;
            let gap_quarters = note.onset_quarters - cut_quarters - end_quarters;
            let bar = metre.locate(note.onset_quarters).signature.bar_quarters();
            let removed = (gap_quarters * share / bar).floor() * bar;
            cuts.push((end_quarters + cut_quarters, removed));
            cut_seconds += gap - max_rest;
            cut_quarters += removed;
        }
        // Every note moves by the same subtraction, so notes struck together stay together.
        note.onset_seconds -= cut_seconds;
        note.onset_quarters -= cut_quarters;
        end_seconds = end_seconds.max(note.onset_seconds + note.duration_seconds);
        end_quarters = end_quarters.max(note.onset_quarters + note.duration_quarters);
    }
    if cuts.iter().any(|&(_, removed)| removed > 0.0) {
        let moved = |at: f64| at - cuts.iter().map(|&(start, removed)| (at - start).clamp(0.0, removed)).sum::<f64>();
        for signature in &mut metre.signatures {
            signature.at_quarters = moved(signature.at_quarters);
        }
        for tempo in &mut metre.tempos {
            tempo.at_quarters = moved(tempo.at_quarters);
        }
        // Entries inside a cut land on its start: the last of them is the one in force.
        keep_last_at_each_point(&mut metre.signatures, |s| s.at_quarters);
        keep_last_at_each_point(&mut metre.tempos, |t| t.at_quarters);
        for press in pedal.iter_mut() {
            let end = moved(press.end_quarters());
            press.onset_quarters = moved(press.onset_quarters);
            press.duration_quarters = end - press.onset_quarters;
        }
        // A press inside a cut is gone.
        pedal.retain(|press| press.duration_quarters > SAME_POINT);
    }
    cuts.len()
}

/// Of consecutive entries at the same point (`at`), keeps the last.
fn keep_last_at_each_point<T>(entries: &mut Vec<T>, at: impl Fn(&T) -> f64) {
    entries.reverse();
    entries.dedup_by(|later, earlier| (at(later) - at(earlier)).abs() < 1e-9);
    entries.reverse();
}

/// The most quarter notes a file may span: 28 hours at 120 BPM. Seconds are bounded by the
/// caps on notes and rests, quarter notes are not: a tempo of one microsecond a quarter
/// makes a minute of music 60 million quarter notes, and a score of them as many bars.
const MAX_SPAN_QUARTERS: f64 = 200_000.0;

/// Quarter notes closer than this are the same point of the score.
const SAME_POINT: f64 = 1e-6;

/// The time signatures of a file, from its `(quarter notes, numerator, power of two of the
/// denominator)` meta events, repaired so that each starts a bar; with how many were
/// repaired. Rules:
/// - no signature at 0 means 4/4 there (the MIDI default); of several at one point, the
///   last in file order wins;
/// - a numerator of 0 or a denominator beyond 16 (1/32 notes and the nonsense a damaged
///   file holds, up to 2^255) is dropped;
/// - a signature in the middle of a bar ends that bar there: a short bar is inserted at the
///   bar's start (5 sixteenths become 5/16), or, where the bar so far is no whole number of
///   sixteenths, the signature moves to the next bar line;
/// - a signature that restates the one in force is dropped (not counted as a repair).
fn metre_of(mut raw: Vec<(f64, u8, u8)>) -> (Vec<TimeSignature>, usize) {
    raw.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut signatures = vec![TimeSignature { at_quarters: 0.0, numerator: 4, denominator: 4 }];
    let mut repaired = 0;
    for (at, numerator, power) in raw {
        if numerator == 0 || power > 4 {
            repaired += 1;
            continue;
        }
        let mut new = TimeSignature { at_quarters: at, numerator, denominator: 1 << power };
        let last = *signatures.last().expect("starts non-empty");
        if at <= last.at_quarters + SAME_POINT {
            *signatures.last_mut().expect("non-empty") = TimeSignature { at_quarters: last.at_quarters, ..new };
            continue;
        }
        let bar = last.bar_quarters();
        let bar_start = last.at_quarters + ((at - last.at_quarters) / bar + SAME_POINT).floor() * bar;
        let into_bar = at - bar_start;
        if into_bar > SAME_POINT {
            repaired += 1;
            let sixteenths = into_bar * 4.0;
            match short_bar(sixteenths) {
                Some((numerator, denominator)) => {
                    signatures.push(TimeSignature { at_quarters: bar_start, numerator, denominator })
                }
                None => new.at_quarters = bar_start + bar,
            }
        }
        let last = signatures.last().expect("non-empty");
        if (last.numerator, last.denominator) != (new.numerator, new.denominator) {
            signatures.push(new);
        }
    }
    (signatures, repaired)
}

/// A bar of `sixteenths` (a whole number of them, at most 255) as a signature in lowest
/// terms (see [`TimeSignature::of_sixteenths`]); `None` when it is no whole number.
fn short_bar(sixteenths: f64) -> Option<(u8, u8)> {
    let whole = sixteenths.round();
    if (sixteenths - whole).abs() > SAME_POINT * 4.0 || !(1.0..=255.0).contains(&whole) {
        return None;
    }
    TimeSignature::of_sixteenths(whole as u32)
}

/// [`read_midi`] with `events` (empty) as the buffer for the merged event stream: parse,
/// merge the tracks, pair note-ons with note-offs, then the hygiene rules and caps.
fn read_midi_with(
    bytes: &[u8],
    options: &ReadOptions,
    events: &mut Vec<TimedEvent>,
) -> Result<(Score, MidiFacts), String> {
    // Parsed lazily, track by track, so the caps bound memory: nothing is held but the
    // events we keep.
    let (header, tracks) = midly::parse(bytes).map_err(|e| format!("not a readable MIDI file: {e}"))?;
    if header.format == midly::Format::Sequential {
        return Err("format 2 (independent sequences) is not supported".into());
    }
    // Three bytes is the smallest event (running status), so this holds most files' events.
    events.reserve(bytes.len() / 3);
    let mut facts = MidiFacts::default();
    let merged = merge_tracks(tracks, options, events, &mut facts)?;
    facts.tempo_changes = merged.tempo_changes.len();
    facts.time_signatures = merged.time_signatures.len();
    let mut clock = Clock::new(header.timing, merged.tempo_changes)?;
    let signatures = merged.time_signatures.iter().map(|&(tick, n, power)| (clock.quarters_of(tick), n, power));
    let (signatures, repaired) = metre_of(signatures.collect());
    facts.signatures_repaired = repaired;
    let mut metre = Metre { signatures, tempos: clock.tempos() };
    let (mut notes, mut pedal) = pair_notes(events, &mut clock, merged.file_end, options, &mut facts);
    // In onset order already; notes that start together go in pitch order (a stable sort,
    // so equal pitches on different channels keep the order they were struck in).
    for chord in notes.chunk_by_mut(|a, b| a.onset_seconds == b.onset_seconds) {
        chord.sort_by_key(|note| note.pitch);
    }
    facts.rests_shortened = shorten_rests(&mut notes, &mut metre, &mut pedal, options.max_rest_seconds);
    if notes.len() > options.max_notes {
        return Err(format!("too many notes: {}, limit extract.max_notes = {}", notes.len(), options.max_notes));
    }
    let span = notes.iter().map(|n| n.onset_quarters + n.duration_quarters).fold(0.0, f64::max);
    if span > MAX_SPAN_QUARTERS {
        return Err(format!(
            "{span:.0} quarter notes long (a tempo of {:.0} BPM or more); at most {MAX_SPAN_QUARTERS} are read",
            metre.tempos.iter().map(|t| t.bpm).fold(0.0, f64::max)
        ));
    }
    if notes.is_empty() {
        return Err(if facts.off_keyboard > 0 {
            format!("no notes on the 88 piano keys ({} outside A0–C8)", facts.off_keyboard)
        } else if merged.drum_notes > 0 {
            format!("no notes: only drums ({} notes on channel 10)", merged.drum_notes)
        } else {
            "no notes".into()
        });
    }
    Ok((Score { notes, metre, pedal }, facts))
}

/// What merging a file's tracks found beside its channel events.
struct Merged {
    /// `(tick, microseconds per quarter)` of every tempo change, from any track.
    tempo_changes: Vec<(u64, u32)>,
    /// `(tick, numerator, power of two of the denominator)` of every time signature.
    time_signatures: Vec<(u64, u8, u8)>,
    /// The tick of the last event of any track (end-of-track markers included).
    file_end: u64,
    /// Notes on the drum channel, which are left out.
    drum_notes: usize,
}

/// Appends every track's channel events but the drums' to `events`, ordered by (tick,
/// track, position in track), under the caps on tracks and events.
fn merge_tracks(
    tracks: midly::TrackIter<'_>,
    options: &ReadOptions,
    events: &mut Vec<TimedEvent>,
    facts: &mut MidiFacts,
) -> Result<Merged, String> {
    let mut tempo_changes = Vec::new();
    let mut time_signatures = Vec::new();
    let mut file_end = 0u64;
    let mut drum_notes = 0usize;
    let mut event_count = 0usize;
    for (track_index, track) in tracks.enumerate() {
        if track_index >= options.max_tracks {
            return Err(format!("too many tracks: more than extract.max_tracks = {}", options.max_tracks));
        }
        // A track whose chunk cannot be read is skipped; one that breaks part-way ends there.
        let Ok(track) = track else { continue };
        let mut tick = 0u64;
        for event in track.map_while(Result::ok) {
            event_count += 1;
            if event_count > options.max_events {
                return Err(format!("too many events: more than extract.max_events = {}", options.max_events));
            }
            tick += u64::from(event.delta.as_int());
            match event.kind {
                TrackEventKind::Meta(MetaMessage::Tempo(micros)) => tempo_changes.push((tick, micros.as_int())),
                TrackEventKind::Meta(MetaMessage::TimeSignature(numerator, power, _, _)) => {
                    time_signatures.push((tick, numerator, power))
                }
                TrackEventKind::Midi { channel, message } if channel.as_int() != DRUM_CHANNEL => {
                    if let MidiMessage::Controller { controller: SUSTAIN_PEDAL, value } = message
                        && value >= 64
                    {
                        facts.pedal_presses += 1;
                    }
                    events.push((tick, channel.as_int(), message));
                }
                TrackEventKind::Midi { message: MidiMessage::NoteOn { vel, .. }, .. } if vel > 0 => drum_notes += 1,
                _ => {}
            }
        }
        file_end = file_end.max(tick);
    }
    // Each track's events are in tick order and the tracks were appended in order, so a
    // stable sort by tick alone gives (tick, track, position); one-track files need none.
    if !events.is_sorted_by_key(|&(tick, _, _)| tick) {
        events.sort_by_key(|&(tick, _, _)| tick);
    }
    Ok(Merged { tempo_changes, time_signatures, file_end, drum_notes })
}

/// Pairs each note-on with the note-off (or pedal lift, or new strike) that ends it, in the
/// merged stream, and ends whatever still sounds at `file_end`. Returns the notes in onset
/// order, and with `Sustain::Events` the pedal presses (else none); notes dropped or cut by
/// the rules are counted in `facts`.
fn pair_notes(
    events: &[TimedEvent],
    clock: &mut Clock,
    file_end: u64,
    options: &ReadOptions,
    facts: &mut MidiFacts,
) -> (Vec<Note>, Vec<PedalPress>) {
    let mut programs = [0u8; 16];
    let mut pedal_down = [false; 16];
    let sustain = options.sustain == Sustain::Apply;
    let mut pedal = PedalTrack::default();
    let mut struck = Struck::with_capacity(events.len() / 2);
    // The place of the note sounding at each (channel, pitch), at index channel·128 + pitch.
    // Flat tables, not maps: they are touched at every note event.
    let mut sounding = [SILENT; 16 * 128];
    // Notes whose key was released while the sustain pedal was down: they ring on until the
    // pedal lifts or the same pitch is struck again. Their places, and per channel a bit
    // per ringing pitch, so lifting the pedal visits only those.
    let mut ringing = [SILENT; 16 * 128];
    let mut ringing_pitches = [0u128; 16];
    for &(tick, channel, message) in events.iter() {
        let ch = usize::from(channel);
        match message {
            MidiMessage::ProgramChange { program } => programs[ch] = program.as_int(),
            MidiMessage::Controller { controller, value } if controller == SUSTAIN_PEDAL && sustain => {
                let down = value >= 64;
                if pedal_down[ch] && !down {
                    let now = clock.at(tick);
                    while ringing_pitches[ch] != 0 {
                        let pitch = ringing_pitches[ch].trailing_zeros() as usize;
                        ringing_pitches[ch] &= ringing_pitches[ch] - 1;
                        let place = std::mem::replace(&mut ringing[ch * 128 + pitch], SILENT);
                        struck.end(place, channel, (tick, now), options, facts);
                    }
                }
                pedal_down[ch] = down;
            }
            MidiMessage::Controller { controller, value }
                if controller == SUSTAIN_PEDAL && options.sustain == Sustain::Events =>
            {
                pedal.set(ch, value >= 64, clock.at(tick).1);
            }
            MidiMessage::NoteOn { key, vel } if vel.as_int() > 0 => {
                let (pitch, now) = (key.as_int(), clock.at(tick));
                let slot = ch * 128 + usize::from(pitch);
                // Striking a key again ends the note sounding or ringing at that pitch.
                ringing_pitches[ch] &= !(1u128 << pitch);
                for table in [&mut sounding, &mut ringing] {
                    struck.end(std::mem::replace(&mut table[slot], SILENT), channel, (tick, now), options, facts);
                }
                let (seconds, quarters) = now;
                let (velocity, program) = (vel.as_int(), programs[ch]);
                sounding[slot] = struck.strike(Onset { tick, seconds, quarters, pitch, velocity, program });
            }
            MidiMessage::NoteOn { key, .. } | MidiMessage::NoteOff { key, .. } => {
                let slot = ch * 128 + usize::from(key.as_int());
                let place = std::mem::replace(&mut sounding[slot], SILENT);
                if place != SILENT && pedal_down[ch] {
                    ringing[slot] = place;
                    ringing_pitches[ch] |= 1u128 << key.as_int();
                } else {
                    struck.end(place, channel, (tick, clock.at(tick)), options, facts);
                }
            }
            _ => {}
        }
    }
    // Whatever still sounds or rings ends with the file.
    let end = (file_end, clock.at(file_end));
    for (slot, &place) in sounding.iter().chain(&ringing).enumerate() {
        struck.end(place, (slot % (16 * 128) / 128) as u8, end, options, facts);
    }
    (struck.into_notes(), pedal.finish(end.1.1))
}

/// The sustain pedal of a file read with `Sustain::Events`: down while it is down on any
/// channel (a piano has one pedal, however many channels a file spreads its hands over).
#[derive(Default)]
struct PedalTrack {
    down: [bool; 16],
    /// Where the pedal went down on some channel, while it is down on any.
    since: Option<f64>,
    presses: Vec<PedalPress>,
}

impl PedalTrack {
    /// Channel `ch`'s pedal is now `down`, at `quarters`.
    fn set(&mut self, ch: usize, down: bool, quarters: f64) {
        self.down[ch] = down;
        let any = self.down.iter().any(|&d| d);
        match (self.since, any) {
            (None, true) => self.since = Some(quarters),
            (Some(onset), false) => {
                self.since = None;
                if quarters - onset > SAME_POINT {
                    self.presses.push(PedalPress { onset_quarters: onset, duration_quarters: quarters - onset });
                }
            }
            _ => {}
        }
    }

    /// The presses, a pedal still down lifted at `end_quarters` (the file's end).
    fn finish(mut self, end_quarters: f64) -> Vec<PedalPress> {
        if let Some(onset) = self.since.take()
            && end_quarters - onset > SAME_POINT
        {
            self.presses.push(PedalPress { onset_quarters: onset, duration_quarters: end_quarters - onset });
        }
        self.presses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midly::num::{u4, u7, u15, u24, u28};
    use midly::{Format, Header, Smf, TrackEvent};

    fn event(delta: u32, kind: TrackEventKind<'static>) -> TrackEvent<'static> {
        TrackEvent { delta: u28::new(delta), kind }
    }

    fn note(delta: u32, channel: u8, key: u8, vel: u8) -> TrackEvent<'static> {
        let message = MidiMessage::NoteOn { key: u7::new(key), vel: u7::new(vel) };
        event(delta, TrackEventKind::Midi { channel: u4::new(channel), message })
    }

    fn file(tracks: Vec<Vec<TrackEvent<'static>>>) -> Vec<u8> {
        let format = if tracks.len() == 1 { Format::SingleTrack } else { Format::Parallel };
        let smf = Smf { header: Header::new(format, Timing::Metrical(u15::new(480))), tracks };
        let mut bytes = Vec::new();
        smf.write_std(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn tempo_from_another_track_and_the_pairing_rules() {
        let tempo = event(0, TrackEventKind::Meta(MetaMessage::Tempo(u24::new(1_000_000)))); // 60 BPM
        let bytes = file(vec![
            vec![tempo],
            vec![
                note(0, 0, 60, 90),
                note(480, 0, 60, 80), // re-struck: ends the first C4 after one quarter
                note(480, 0, 60, 0),  // velocity 0 = note-off
                note(0, 9, 36, 100),  // drums: dropped
                note(0, 0, 64, 0),    // off without on: ignored
                note(0, 0, 67, 70),   // never released: ends at the end of the file
                note(960, 0, 62, 0),
            ],
        ]);
        let notes = notes_of_midi(&bytes, &ReadOptions::default()).unwrap();
        let got: Vec<(u8, f64, f64, u8)> =
            notes.iter().map(|n| (n.pitch, n.onset_seconds, n.duration_seconds, n.velocity)).collect();
        assert_eq!(got, vec![(60, 0.0, 1.0, 90), (60, 1.0, 1.0, 80), (67, 2.0, 2.0, 70)]);
        assert_eq!(notes[2].onset_quarters, 2.0);
    }

    fn pedal(delta: u32, value: u8) -> TrackEvent<'static> {
        let message = MidiMessage::Controller { controller: SUSTAIN_PEDAL, value: u7::new(value) };
        event(delta, TrackEventKind::Midi { channel: u4::new(0), message })
    }

    #[test]
    fn the_sustain_pedal_holds_released_keys() {
        // 120 BPM: 480 ticks = 0.5 s.
        let bytes = file(vec![vec![
            pedal(0, 127),
            note(0, 0, 60, 90),
            note(0, 0, 64, 90),
            note(240, 0, 60, 0), // released under the pedal: rings on
            note(0, 0, 64, 0),
            note(240, 0, 64, 80), // E4 struck again: the held one ends here
            note(240, 0, 64, 0),
            pedal(240, 0),      // pedal up: C4 and the second E4 end
            note(0, 0, 10, 90), // below A0: dropped
            note(0, 0, 67, 90),
            note(48_000, 0, 67, 0), // 50 s: cut to 30
        ]]);
        let summary = |notes: &[Note]| -> Vec<(u8, f64, f64)> {
            notes.iter().map(|n| (n.pitch, n.onset_seconds, (n.duration_seconds * 1000.0).round() / 1000.0)).collect()
        };
        let (Score { notes, .. }, facts) = read_midi(&bytes, &ReadOptions::default()).unwrap();
        assert_eq!(summary(&notes), vec![(60, 0.0, 1.0), (64, 0.0, 0.5), (64, 0.5, 0.5), (67, 1.0, 30.0)]);
        assert_eq!((facts.pedal_presses, facts.off_keyboard, facts.shortened), (1, 1, 1));
        assert!((notes[3].duration_quarters - 60.0).abs() < 1e-9, "30 s at 120 BPM is 60 quarters");

        let ignore = ReadOptions { sustain: Sustain::Ignore, ..ReadOptions::default() };
        let notes = notes_of_midi(&bytes, &ignore).unwrap();
        assert_eq!(summary(&notes)[..3], [(60, 0.0, 0.25), (64, 0.0, 0.25), (64, 0.5, 0.25)]);

        // As events: the notes as ignored, and the press, in quarter notes (0 to 2).
        let events = ReadOptions { sustain: Sustain::Events, ..ReadOptions::default() };
        let (score, _) = read_midi(&bytes, &events).unwrap();
        assert_eq!(summary(&score.notes), summary(&notes));
        assert_eq!(score.pedal, [PedalPress { onset_quarters: 0.0, duration_quarters: 2.0 }]);
        assert!(read_midi(&bytes, &ReadOptions::default()).unwrap().0.pedal.is_empty(), "applied, not kept");
    }

    #[test]
    fn kept_as_events_the_pedal_is_one_for_every_channel_and_moves_with_a_shortened_rest() {
        let on_channel = |delta: u32, channel: u8, value: u8| {
            let message = MidiMessage::Controller { controller: SUSTAIN_PEDAL, value: u7::new(value) };
            event(delta, TrackEventKind::Midi { channel: u4::new(channel), message })
        };
        // 120 BPM, 480 ticks a quarter: the pedal down on channel 1 at 0, on channel 2 at 1
        // quarter, up on 1 at 2 and on 2 at 3: one press of three quarters. Then 100 s of
        // silence (shortened to 60, by whole bars) and a press still down at the end.
        let rest = 200 * 480;
        let bytes = file(vec![vec![
            on_channel(0, 0, 100),
            note(0, 0, 60, 90),
            on_channel(480, 1, 127),
            on_channel(480, 0, 0),
            on_channel(480, 1, 20),
            note(0, 0, 60, 0),
            on_channel(rest, 0, 127),
            note(0, 0, 62, 90),
            note(960, 0, 62, 0),
        ]]);
        let events = ReadOptions { sustain: Sustain::Events, ..ReadOptions::default() };
        let (score, facts) = read_midi(&bytes, &events).unwrap();
        assert_eq!(facts.rests_shortened, 1);
        let second = score.notes[1].onset_quarters;
        assert!(second < 3.0 + 200.0 && (second - 3.0) % 4.0 == 0.0, "moved by whole bars: {second}");
        assert_eq!(
            score.pedal,
            [
                PedalPress { onset_quarters: 0.0, duration_quarters: 3.0 },
                PedalPress { onset_quarters: second, duration_quarters: 2.0 },
            ]
        );
    }

    #[test]
    fn notes_come_out_by_onset_then_pitch_whatever_order_they_end_in() {
        let bytes = file(vec![vec![
            note(0, 0, 67, 90), // a chord struck top down
            note(0, 0, 60, 90),
            note(0, 0, 64, 90),
            note(100, 0, 72, 90), // a later note that ends first
            note(10, 0, 72, 0),
            note(100, 0, 60, 0),
            note(0, 0, 67, 0),
            note(50, 0, 64, 0),
        ]]);
        let notes = notes_of_midi(&bytes, &ReadOptions::default()).unwrap();
        let order: Vec<(u8, f64)> = notes.iter().map(|n| (n.pitch, n.onset_quarters)).collect();
        assert_eq!(order, vec![(60, 0.0), (64, 0.0), (67, 0.0), (72, 100.0 / 480.0)]);
    }

    #[test]
    fn caps_reject_a_file_before_it_grows() {
        let bytes = file((0..3).map(|i| vec![note(0, 0, 60 + i, 90), note(10, 0, 60 + i, 0)]).collect());
        let mut limits = ReadOptions::default();
        assert_eq!(notes_of_midi(&bytes, &limits).unwrap().len(), 3);
        limits.max_tracks = 2;
        assert!(notes_of_midi(&bytes, &limits).unwrap_err().contains("extract.max_tracks"));
        limits = ReadOptions { max_events: 5, ..ReadOptions::default() };
        assert!(notes_of_midi(&bytes, &limits).unwrap_err().contains("extract.max_events"));
        limits = ReadOptions { max_notes: 2, ..ReadOptions::default() };
        assert!(notes_of_midi(&bytes, &limits).unwrap_err().contains("extract.max_notes"));
    }

    #[test]
    fn format_2_and_drum_only_files_are_rejected_with_reasons() {
        let mut smf_bytes = file(vec![vec![note(0, 0, 60, 90)], vec![note(0, 0, 62, 90)]]);
        smf_bytes[9] = 2; // the format field of the header
        assert!(notes_of_midi(&smf_bytes, &ReadOptions::default()).unwrap_err().starts_with("format 2"));
        let drums = file(vec![vec![note(0, 9, 36, 100), note(10, 9, 36, 0)]]);
        assert!(notes_of_midi(&drums, &ReadOptions::default()).unwrap_err().contains("only drums"));
    }

    fn signature(delta: u32, numerator: u8, power: u8) -> TrackEvent<'static> {
        event(delta, TrackEventKind::Meta(MetaMessage::TimeSignature(numerator, power, 24, 8)))
    }

    #[test]
    fn time_signatures_start_bars_and_bad_ones_are_repaired() {
        // 3/4 at 0; 0/1 and 255/2^255 (impossible) dropped; 2/4 one beat into bar 2 (tick
        // 1920): bar 2 is cut to a 1/4 bar; 6/8 at 1 1/3 quarters into a 2/4 bar, no whole
        // number of sixteenths: moved to the next bar line.
        let meta = vec![
            signature(0, 3, 2),
            signature(480, 0, 0),
            signature(0, 255, 255),
            signature(1440, 2, 2),
            signature(640, 6, 3),
            note(0, 0, 60, 80),
            note(480, 0, 60, 0),
            event(0, TrackEventKind::Meta(MetaMessage::EndOfTrack)),
        ];
        let notes_track =
            vec![note(0, 0, 64, 80), note(4800, 0, 64, 0), event(0, TrackEventKind::Meta(MetaMessage::EndOfTrack))];
        let (Score { metre, .. }, facts) = read_midi(&file(vec![meta, notes_track]), &ReadOptions::default()).unwrap();
        let found: Vec<(f64, u8, u8)> =
            metre.signatures.iter().map(|s| (s.at_quarters, s.numerator, s.denominator)).collect();
        assert_eq!(found, vec![(0.0, 3, 4), (3.0, 1, 4), (4.0, 2, 4), (6.0, 6, 8)]);
        assert_eq!((facts.time_signatures, facts.signatures_repaired), (5, 4));
        let at = metre.locate(7.5);
        assert_eq!((at.bar, at.in_bar_quarters, at.signature.numerator), (3, 1.5, 6));
        // No signature at all: 4/4, the MIDI default.
        let plain = file(vec![vec![note(0, 0, 60, 80), note(480, 0, 60, 0)]]);
        assert_eq!(
            read_midi(&plain, &ReadOptions::default()).unwrap().0.metre.signatures,
            crate::Metre::default().signatures
        );
    }

    #[test]
    fn a_file_spanning_absurdly_many_quarter_notes_is_refused() {
        // One microsecond a quarter note: a quarter of a second is 250,000 quarter notes.
        let tempo = event(0, TrackEventKind::Meta(MetaMessage::Tempo(u24::new(1))));
        let bytes = file(vec![vec![tempo, note(0, 0, 60, 80), note(480 * 250_000, 0, 60, 0)]]);
        let why = notes_of_midi(&bytes, &ReadOptions::default()).unwrap_err();
        assert!(why.contains("quarter notes long") && why.contains("200000"), "{why}");
    }
}

//! `music`: the floor every stage stands on — what a note is and how music gets in and out
//! of the pipeline, with no knowledge of tensors, files on disk or settings.
//!
//! - [`note`]: the note as extract keeps it, [`Note`], the note as it sounds, [`TimedNote`],
//!   and the piano's 88 keys;
//! - [`files`]: which files are MIDI files (the rule `extract` and the tools share);
//! - [`midi_in`]: a standard MIDI file's bytes → notes, by fixed rules under caps;
//! - [`midi_out`]: notes → a standard MIDI file for piano;
//! - [`metre`]: a piece's time signatures and tempo map, and where a note falls in its bars;
//! - [`encoding`], [`codec`], [`beats`], [`performance`], [`names`]: the token encodings, notes →
//!   tokens → notes, with augmentation; [`fidelity`] measures what survives the round trip;
//! - [`grammar`]: which `performance` token may come next, for sampling ([`beats`] has its own);
//! - [`key`]: the diatonic scale a passage keeps to, and its key signature.
//!
//! Key design decision: this crate depends on nothing of the pipeline's, so every stage and
//! tool can use it and no stage needs another stage's crate. Settings come in as plain
//! option structs ([`midi_in::ReadOptions`], [`grammar::Limits`]), which `config` fills from
//! `pipeline.toml`; what is stored on disk is `artifacts`' business, which stores these
//! types as they are.

pub mod beats;
pub mod codec;
pub mod encoding;
pub mod fidelity;
pub mod files;
pub mod grammar;
pub mod key;
pub mod metre;
pub mod midi_in;
pub mod midi_out;
pub mod names;
pub mod note;
pub mod performance;

pub use codec::{Codec, Playback, augment, augment_metre, augmentations};
pub use encoding::{Augmentation, Encoding, Vocabulary};
pub use metre::{Metre, PedalPress, Score, Tempo, TimeSignature, on_grid, on_grid_share, on_grid_share_shifted};
pub use midi_in::{ReadOptions, Sustain};
pub use note::{Note, PIANO_KEYS, TimedNote, parse_pitch_name, pitch_name};

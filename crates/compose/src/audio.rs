//! Listening: renders a MIDI file to a WAV file with a General MIDI SoundFont, in pure Rust
//! (rustysynth), so no player or synthesizer needs to be installed.

use music::midi_out as midi_file;
use rustysynth::{MidiFile, MidiFileSequencer, SoundFont, Synthesizer, SynthesizerSettings};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Output sample rate.
pub const SAMPLE_RATE: u32 = 44_100;
/// Silence rendered after the last note so its release rings out: long enough for a
/// piano's release, short enough that a recording lasts as long as its piece to within a
/// second (what a player shows beside the piece's length).
const TAIL_SECONDS: f64 = 0.75;

/// Where General MIDI SoundFonts are commonly installed (Debian's fluid-soundfont-gm first).
const KNOWN_SOUNDFONTS: [&str; 5] = [
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
];

/// The SoundFont to use: `configured` if given, else the first one installed where
/// SoundFonts usually are. The error says how to get one.
pub fn find_soundfont(configured: &str) -> Result<PathBuf, String> {
    if !configured.is_empty() {
        let path = PathBuf::from(configured);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("compose.soundfont = {configured:?} is not a file"))
        };
    }
    KNOWN_SOUNDFONTS.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| {
        "no SoundFont found: set compose.soundfont to a General MIDI .sf2 file, or install one \
         (Debian/Ubuntu: apt-get install fluid-soundfont-gm; macOS: brew install fluid-synth, or download \
         FluidR3_GM.sf2)"
            .to_string()
    })
}

/// The longest music rendered: an hour of 16-bit stereo is 635 MB of WAV.
pub const MAX_RENDER_SECONDS: f64 = 3600.0;

/// Renders `midi` to a 16-bit stereo WAV file at `wav`; returns the seconds rendered.
///
/// The file is read by the pipeline's own reader ([`music::midi_in`]) (lenient, every size capped, silences shortened)
/// and written anew by this crate's MIDI writer before the synthesizer sees it, so a
/// damaged or hostile file can neither crash the synthesizer nor make it allocate for
/// hours of silence. Music longer than [`MAX_RENDER_SECONDS`] is refused.
pub fn render_wav(midi: &Path, soundfont: &Path, wav: &Path) -> Result<f64, String> {
    let open = |path: &Path| std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()));
    let sound_font =
        Arc::new(SoundFont::new(&mut open(soundfont)?).map_err(|e| format!("{}: {e:?}", soundfont.display()))?);
    let limits = config::ExtractConfig::default();
    let bytes = artifacts::read_capped(midi, limits.max_file_bytes).map_err(|e| format!("{}: {e}", midi.display()))?;
    let notes = music::midi_in::notes_of_midi(&bytes, &limits.read_options())
        .map_err(|e| format!("{}: {e}", midi.display()))?;
    let length = notes.iter().map(|n| n.onset_seconds + n.duration_seconds).fold(0.0, f64::max);
    if length > MAX_RENDER_SECONDS {
        return Err(format!("{}: {length:.0} s of music; at most {MAX_RENDER_SECONDS} s are rendered", midi.display()));
    }
    // As heard, at one steady tempo: the synthesizer plays the file's seconds, whatever its tempo map.
    let notes: Vec<music::Note> = notes.iter().map(|n| music::Note::at_steady_tempo(n.into(), 120.0)).collect();
    let rewritten = midi_file::to_bytes(&music::Score { notes, metre: music::Metre::default() }, None);
    let midi_file = Arc::new(
        MidiFile::new(&mut std::io::Cursor::new(rewritten)).map_err(|e| format!("{}: {e:?}", midi.display()))?,
    );
    let settings = SynthesizerSettings::new(SAMPLE_RATE as i32);
    let synthesizer = Synthesizer::new(&sound_font, &settings).map_err(|e| format!("synthesizer: {e:?}"))?;
    let mut sequencer = MidiFileSequencer::new(synthesizer);
    sequencer.play(&midi_file, false);

    let seconds = midi_file.get_length() + TAIL_SECONDS;
    let samples = (seconds * f64::from(SAMPLE_RATE)) as usize;
    let (mut left, mut right) = (vec![0f32; samples], vec![0f32; samples]);
    sequencer.render(&mut left, &mut right);

    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    // Written beside the target and renamed, like every other output of the pipeline.
    let temporary = wav.with_extension("wav.tmp");
    let write = || -> Result<(), hound::Error> {
        let mut writer = hound::WavWriter::create(&temporary, spec)?;
        for (l, r) in left.iter().zip(&right) {
            writer.write_sample((l.clamp(-1.0, 1.0) * 32767.0) as i16)?;
            writer.write_sample((r.clamp(-1.0, 1.0) * 32767.0) as i16)?;
        }
        writer.finalize()
    };
    write().and_then(|()| std::fs::rename(&temporary, wav).map_err(hound::Error::from)).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        format!("{}: {e}", wav.display())
    })?;
    Ok(seconds)
}

/// Renders each MIDI file to a WAV file beside it (`music.mid` → `music.wav`) with the
/// SoundFont `configured`, or one from the usual places when that is empty.
pub fn render_beside(midis: &[PathBuf], configured: &str) -> Result<(), String> {
    let soundfont = find_soundfont(configured)?;
    for midi in midis {
        let wav = midi.with_extension("wav");
        let seconds = render_wav(midi, &soundfont, &wav)?;
        tracing::info!("wrote {} ({seconds:.0} s, SoundFont {})", wav.display(), soundfont.display());
    }
    Ok(())
}

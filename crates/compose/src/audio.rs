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
    artifacts::refuse_input_as_output(wav, &[midi, soundfont]).map_err(|e| e.to_string())?;
    let font_bytes = artifacts::read_capped(soundfont, MAX_SOUNDFONT_BYTES)
        .map_err(|e| format!("{}: {e} (a SoundFont is read up to {MAX_SOUNDFONT_BYTES} bytes)", soundfont.display()))?;
    let damaged = |e: String| format!("{}: {e}", soundfont.display());
    let sound_font = Arc::new(
        caught(|| SoundFont::new(&mut std::io::Cursor::new(font_bytes)))
            .map_err(damaged)?
            .map_err(|e| damaged(format!("{e:?}")))?,
    );
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
    let rewritten = midi_file::to_bytes(&music::Score { notes, ..Default::default() }, None);
    let midi_file = Arc::new(
        MidiFile::new(&mut std::io::Cursor::new(rewritten)).map_err(|e| format!("{}: {e:?}", midi.display()))?,
    );
    let settings = SynthesizerSettings::new(SAMPLE_RATE as i32);
    let seconds = midi_file.get_length() + TAIL_SECONDS;
    let samples = (seconds * f64::from(SAMPLE_RATE)) as usize;
    let (mut left, mut right) = (vec![0f32; samples], vec![0f32; samples]);
    caught(|| -> Result<(), String> {
        let synthesizer = Synthesizer::new(&sound_font, &settings).map_err(|e| format!("{e:?}"))?;
        let mut sequencer = MidiFileSequencer::new(synthesizer);
        sequencer.play(&midi_file, false);
        sequencer.render(&mut left, &mut right);
        Ok(())
    })
    .and_then(|rendered| rendered)
    .map_err(|e| format!("{}: the synthesizer failed on this SoundFont: {e}", soundfont.display()))?;

    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    // Encoded in memory, then written as every output of the pipeline is: atomically.
    let mut encoded = std::io::Cursor::new(Vec::with_capacity(samples * 4 + 44));
    let mut encode = || -> Result<(), hound::Error> {
        let mut writer = hound::WavWriter::new(&mut encoded, spec)?;
        for (l, r) in left.iter().zip(&right) {
            writer.write_sample((l.clamp(-1.0, 1.0) * 32767.0) as i16)?;
            writer.write_sample((r.clamp(-1.0, 1.0) * 32767.0) as i16)?;
        }
        writer.finalize()
    };
    encode().map_err(|e| format!("{}: {e}", wav.display()))?;
    artifacts::write_if_changed(wav, encoded.get_ref()).map_err(|e| e.to_string())?;
    Ok(seconds)
}

/// The largest SoundFont read: General MIDI fonts are 30–150 MB.
pub const MAX_SOUNDFONT_BYTES: u64 = 1 << 30;

/// Runs `work`, turning a panic inside it (a third-party parser or synthesizer meeting
/// bytes it did not expect) into an error with the panic's message, printed by the caller
/// as one line instead of a crash with a backtrace.
fn caught<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    std::panic::set_hook(quiet);
    result.map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "an internal error".to_string());
        format!("damaged? ({message})")
    })
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

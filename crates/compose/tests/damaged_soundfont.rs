//! A damaged SoundFont never crashes `listen` or `compose --wav`: every byte of a small
//! SoundFont, written here by hand, is damaged in turn, and rendering either succeeds or
//! ends with one error naming the file (a panic inside the synthesizer included).

use std::path::Path;

/// A RIFF chunk: id, little-endian length, data (padded to an even length).
fn chunk(id: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = id.to_vec();
    out.extend((data.len() as u32).to_le_bytes());
    out.extend(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out
}

fn list(kind: &[u8; 4], chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut data = kind.to_vec();
    chunks.iter().for_each(|c| data.extend(c));
    chunk(b"LIST", &data)
}

/// A name field of 20 bytes.
fn name(text: &str) -> Vec<u8> {
    let mut field = text.as_bytes().to_vec();
    field.resize(20, 0);
    field
}

/// The smallest SoundFont that plays: one preset, one instrument, one sample of a sine.
fn tiny_soundfont() -> Vec<u8> {
    let samples: Vec<u8> = (0..400)
        .map(|i| ((i as f32 * 0.2).sin() * 8000.0) as i16)
        .chain(std::iter::repeat_n(0, 46)) // the 46 zero samples the format asks after each
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let u16s = |values: &[u16]| values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let phdr = |preset_name: &str, bag: u16| [name(preset_name), u16s(&[0, 0, bag]), vec![0; 12]].concat();
    let inst = |instrument: &str, bag: u16| [name(instrument), u16s(&[bag])].concat();
    let shdr = |sample: &str, start: u32, end: u32| {
        let mut record = name(sample);
        for value in [start, end, 0, end.saturating_sub(1), 22050] {
            record.extend(value.to_le_bytes());
        }
        record.extend([60, 0]); // original pitch, correction
        record.extend(u16s(&[0, if end > 0 { 1 } else { 0 }])); // link, mono sample
        record
    };
    let info = list(b"INFO", &[chunk(b"ifil", &u16s(&[2, 1])), chunk(b"INAM", b"tiny\0\0")]);
    let sdta = list(b"sdta", &[chunk(b"smpl", &samples)]);
    let pdta = list(
        b"pdta",
        &[
            chunk(b"phdr", &[phdr("piano", 0), phdr("EOP", 1)].concat()),
            chunk(b"pbag", &u16s(&[0, 0, 1, 0])),
            chunk(b"pmod", &[0; 10]),
            // generator 41 (instrument) = 0, then the terminal record
            chunk(b"pgen", &u16s(&[41, 0, 0, 0])),
            chunk(b"inst", &[inst("sine", 0), inst("EOI", 1)].concat()),
            chunk(b"ibag", &u16s(&[0, 0, 1, 0])),
            chunk(b"imod", &[0; 10]),
            // generator 53 (sample) = 0, then the terminal record
            chunk(b"igen", &u16s(&[53, 0, 0, 0])),
            chunk(b"shdr", &[shdr("sine", 0, 400), shdr("EOS", 0, 0)].concat()),
        ],
    );
    let mut body = b"sfbk".to_vec();
    body.extend(info);
    body.extend(sdta);
    body.extend(pdta);
    chunk(b"RIFF", &body)
}

fn render(dir: &Path, font: &[u8]) -> Result<f64, String> {
    let path = dir.join("font.sf2");
    std::fs::write(&path, font).unwrap();
    compose::audio::render_wav(&dir.join("music.mid"), &path, &dir.join("music.wav"))
}

#[test]
fn every_damaged_byte_of_a_soundfont_is_an_error_or_a_recording_never_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let notes = vec![music::Note::of_score(60, 90, 0.0, 1.0, 120.0), music::Note::of_score(64, 70, 1.0, 1.0, 120.0)];
    let score = music::Score { notes, ..Default::default() };
    std::fs::write(dir.path().join("music.mid"), music::midi_out::to_bytes(&score, None)).unwrap();
    let font = tiny_soundfont();
    let seconds = render(dir.path(), &font).expect("the undamaged SoundFont plays");
    assert!(seconds > 1.0);
    // The sample data is sine; the structure around it is what a parser reads.
    let samples = font.windows(4).position(|w| w == b"smpl").unwrap() + 8;
    let (mut errors, mut played, mut caught) = (0, 0, 0);
    for index in (0..font.len()).filter(|&i| !(samples..samples + 892).contains(&i)) {
        for value in [0x00, 0xff, font[index] ^ 0x80] {
            let mut damaged = font.clone();
            damaged[index] = value;
            match render(dir.path(), &damaged) {
                Ok(_) => played += 1,
                Err(message) => {
                    assert!(message.contains("font.sf2") && !message.contains('\n'), "{message}");
                    errors += 1;
                    caught += usize::from(message.contains("damaged?"));
                }
            }
        }
    }
    eprintln!("{errors} errors ({caught} of them panics caught), {played} recordings");
    assert!(errors > 0 && played > 0, "{errors} errors, {played} recordings");
}

"""Reads MIDI files with an independent parser (Python's mido) and checks that each one
opens, has notes and a length, and, for generated files, a tempo and the piano program."""
import sys

import mido

failures = 0
for path in sys.argv[1:]:
    try:
        midi = mido.MidiFile(path)
        notes = sum(1 for m in midi if m.type == "note_on" and m.velocity > 0)
        tempos = sum(1 for m in midi if m.type == "set_tempo")
        programs = {m.program for m in midi if m.type == "program_change"}
        assert notes > 0, "no notes"
        assert midi.length > 0, "zero length"
        if "generated" in path:
            assert tempos >= 1, "no tempo"
            assert programs == {0}, f"programs {programs}"
        print(f"ok   {path}: type {midi.type}, {notes} notes, {midi.length:.1f} s")
    except Exception as error:  # any failure to read is what this check looks for
        failures += 1
        print(f"FAIL {path}: {error}")
print(f"interop: {len(sys.argv) - 1 - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)

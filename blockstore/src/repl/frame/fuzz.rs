//! The fuzzing entry point of the replication frame codec, kept beside the codec so the
//! cargo-fuzz target is a one-line call and the unit tests run the same function.

use super::{encode, encoded_len, Decoder};

/// Fuzz entry point (the `repl_frame` cargo-fuzz target is a one-line call to it; the unit
/// tests run it under proptest). Pushes the input into a [`Decoder`] in two chunks and checks
/// every decoded frame survives encode then decode unchanged, and that an error sticks.
///
/// The first byte steers: bit 0 set corrects the CRC of every frame in the rest first (so the
/// fuzzer reaches the body parsers instead of stopping at the checksum); the other seven bits
/// place the split between the two chunks, from the start (0) to the end (127).
#[cfg(any(test, feature = "fuzz"))]
pub fn fuzz_repl_frame(data: &[u8]) {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let mut input = stream.to_vec();
    if control & 1 == 1 {
        super::encode::fix_crcs(&mut input);
    }
    let split = input.len() * usize::from(control >> 1) / 127;
    let (first, second) = input.split_at(split.min(input.len()));
    let mut dec = Decoder::new();
    dec.push(first);
    let mut pushed_second = false;
    loop {
        match dec.next_frame() {
            Ok(Some(frame)) => {
                let mut bytes = Vec::new();
                encode(&frame, &mut bytes);
                assert_eq!(bytes.len(), encoded_len(&frame));
                let mut again = Decoder::new();
                again.push(&bytes);
                assert_eq!(again.next_frame(), Ok(Some(frame)));
                assert_eq!(again.next_frame(), Ok(None));
                assert_eq!(again.buffered(), 0);
            }
            Ok(None) if !pushed_second => {
                dec.push(second);
                pushed_second = true;
            }
            Ok(None) => break,
            Err(e) => {
                assert!(e.is_fatal());
                dec.push(first);
                assert_eq!(dec.next_frame(), Err(e));
                break;
            }
        }
    }
}

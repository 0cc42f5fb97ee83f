//! The thread count changes how the work is split, never the numbers: one training step's
//! loss and gradients, and generated logits, are bit-for-bit the same with one thread and
//! with several, in float32 and in bfloat16. (Its own test binary, because it changes the
//! process-wide thread setting.)

use candle_core::{Device, Tensor};
use lstm::{Generator, LstmModel, Precision};
use seeded_rng::SeededRng;

#[test]
fn one_thread_and_four_threads_give_identical_gradients() {
    let hp =
        artifacts::Hyperparameters { vocab_size: 50, embedding: 16, hidden: 48, layers: 2, dropout: 0.2, seq_len: 20 };
    let mut model = LstmModel::new(hp, 3, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..12 * 21).map(|i| (i * 17 % 50) as u32).collect();
    let all = Tensor::from_vec(ids, (12, 21), &Device::Cpu).unwrap();
    let (inputs, targets) = (all.narrow(1, 0, 20).unwrap(), all.narrow(1, 1, 20).unwrap());
    // Float32 everywhere, and bfloat16 where the processor multiplies it.
    let mut precisions = vec![Precision::F32];
    if products::bf16::available() {
        precisions.push(Precision::Bf16);
    } else {
        eprintln!("one_thread_and_four_threads_give_identical_gradients: no AVX-512 BF16 here, bf16 untested");
    }
    for precision in precisions {
        model.set_precision(precision).unwrap();
        let run = |threads: &str| {
            // SAFETY: this test binary has this one test, so no other thread reads the environment.
            unsafe { std::env::set_var("RAYON_NUM_THREADS", threads) };
            let mut rng = SeededRng::new(1, "dropout");
            model.loss_and_gradients(&inputs, &targets, Some((&mut rng, 0.2))).unwrap()
        };
        let (one_loss, one_grads) = run("1");
        let (four_loss, four_grads) = run("4");
        assert_eq!(one_loss.to_bits(), four_loss.to_bits(), "{precision:?}");
        for (name, (a, b)) in model.names().iter().zip(one_grads.iter().zip(&four_grads)) {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{precision:?}: gradient of {name} differs"
            );
        }

        // Generation, with one stream (its own kernel) and with 17 (more than one register's worth).
        for streams in [1, 17] {
            let generate = |threads: &str| {
                // SAFETY: as above.
                unsafe { std::env::set_var("RAYON_NUM_THREADS", threads) };
                let mut generator = Generator::new(&model, streams).unwrap();
                let mut logits = Vec::new();
                for step in 0..5u32 {
                    let tokens: Vec<u32> = (0..streams as u32).map(|s| (s * 7 + step * 3) % 50).collect();
                    logits.extend(generator.step(&tokens).unwrap().iter().map(|v| v.to_bits()));
                }
                logits
            };
            assert_eq!(generate("1"), generate("4"), "{precision:?}, {streams} stream(s): logits differ");
        }
    }
}

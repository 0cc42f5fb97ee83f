//! The bfloat16 products on Intel AMX tiles, where the processor has them (Xeon since
//! Sapphire Rapids): the same arithmetic as [`crate::bf16`]'s `vdpbf16ps` kernels — bfloat16
//! operands, products summed in float32 — done by the tile unit, which multiplies a 16 × 32
//! block by a 32 × 16 block in one instruction (`tdpbf16ps`). On the 2-core Xeon this project
//! was measured on, one core's tile unit ran 1.5 TFLOP/s against 0.15 for `vdpbf16ps` on both,
//! which made bfloat16 half as fast as float32 there while PyTorch's oneDNN, using the tiles,
//! ran twice as fast.
//!
//! Tiles are registers of up to 16 rows of 64 bytes. C (16 × 16 float32) accumulates
//! A (16 rows × 32 bfloat16 of k) times B (16 rows of k pairs × 16 columns, each 32-bit lane
//! the pair (k, k+1) of one column): the right operand's pair layout of [`crate::bf16`] is
//! already B's. The left operand is kept row-major in pairs, padded to whole tiles with
//! zeros ([`TileRows`]); each thread computes 32 × 32 blocks of the output in four C tiles
//! from two A and two B tiles, over k in order, so every output is summed in one fixed
//! order whatever the thread count.
//!
//! Rust has no stable AMX intrinsics; the few instructions are written in `asm!`, one
//! instruction a block (the tile registers are not Rust values, and no compiled code
//! touches them between blocks). Linux gives a process the tiles' 8 KB of state only on
//! request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), made once in [`available`].

use crate::mat::Mat;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Rows of a tile, and pairs (32-bit lanes) in a tile row.
const TILE: usize = 16;
/// Output rows and columns each step of the kernel computes: 2 × 2 tiles.
const BLOCK: usize = 2 * TILE;

/// Whether the products may use AMX: the processor has AMX-TILE and AMX-BF16 and the
/// kernel granted this process the tile state. Asked once.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            // CPUID leaf 7, sub-leaf 0: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
            let features = std::arch::x86_64::__cpuid_count(7, 0).edx;
            let has_tiles = features & (1 << 22) != 0 && features & (1 << 24) != 0;
            // SAFETY: arch_prctl only changes this process's permissions.
            has_tiles && unsafe { request_tile_state() }
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: true when granted.
///
/// # Safety
/// Linux on x86-64 only.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
unsafe fn request_tile_state() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let result: i64;
    // SAFETY: the system call reads two integers and writes rax; rcx and r11 are clobbered.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => result,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result == 0
}

/// The left operand of a tile product: rounded to bfloat16, row-major in k pairs, rows
/// padded to a multiple of [`BLOCK`] and pairs to a multiple of [`TILE`], with zeros.
/// Invariant: `data` holds `padded_rows · padded_pairs` lanes.
pub struct TileRows {
    rows: usize,
    padded_pairs: usize,
    data: Vec<u32>,
}

impl TileRows {
    /// Packs `a` (any strides; a dense matrix and the transpose of one are read in order).
    pub fn new(a: Mat) -> Self {
        let (rows, depth) = (a.rows, a.cols);
        let pairs = depth.div_ceil(2);
        let padded_pairs = pairs.next_multiple_of(TILE);
        let mut data = vec![0u32; rows.next_multiple_of(BLOCK) * padded_pairs];
        // Blocks of rows in parallel; within one, a transpose is read a column pair at a time.
        data.par_chunks_mut((BLOCK * padded_pairs).max(1)).enumerate().for_each(|(block, lanes)| {
            let (first, count) = (block * BLOCK, rows.saturating_sub(block * BLOCK).min(BLOCK));
            let lane = |r: usize, p: usize| r * padded_pairs + p;
            if a.row(0).is_some() {
                for r in 0..count {
                    let row = a.row(first + r).expect("rows are contiguous");
                    for (p, values) in row.chunks(2).enumerate() {
                        lanes[lane(r, p)] = crate::bfloat::pair(values[0], values.get(1).copied().unwrap_or(0.0));
                    }
                }
            } else if a.column(0).is_some() {
                for p in 0..pairs {
                    let low = &a.column(2 * p).expect("columns are contiguous")[first..][..count];
                    let high = a.column(2 * p + 1).map(|c| &c[first..][..count]);
                    for (r, &value) in low.iter().enumerate() {
                        lanes[lane(r, p)] = crate::bfloat::pair(value, high.map_or(0.0, |h| h[r]));
                    }
                }
            } else {
                for r in 0..count {
                    for p in 0..pairs {
                        let high = if 2 * p + 1 < depth { a.at(first + r, 2 * p + 1) } else { 0.0 };
                        lanes[lane(r, p)] = crate::bfloat::pair(a.at(first + r, 2 * p), high);
                    }
                }
            }
        });
        TileRows { rows, padded_pairs, data }
    }

    /// `dst += self · x` for `x` packed by [`crate::bf16::pack_columns`] (`[⌈K/2⌉, columns]`
    /// pairs, then zero pairs up to a multiple of 16 and 32 lanes more) and dense row-major
    /// `dst` `[rows, columns]`, the rows split into one band per thread. Panics where
    /// [`available`] is false.
    pub fn multiply_add(&self, dst: &mut [f32], x: &[u32], columns: usize, threads: usize) {
        assert!(available(), "tile products need AMX, which this processor or system lacks");
        assert!(
            dst.len() >= self.rows * columns && x.len() >= self.padded_pairs * columns + BLOCK,
            "tile product out of bounds"
        );
        if self.rows == 0 || columns == 0 {
            return;
        }
        crate::mat::in_row_bands(dst, (self.rows, columns), BLOCK, threads, |first, dst_band| {
            let rows = dst_band.len() / columns;
            let left = &self.data[first * self.padded_pairs..][..rows.next_multiple_of(BLOCK) * self.padded_pairs];
            // SAFETY: AMX is available and this thread may use it (checked above); the
            // sizes were checked above.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                kernels::band_product(dst_band, left, x, (rows, self.padded_pairs, columns))
            };
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("tile products run on x86-64 only: {}", left.len());
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod kernels {
    use super::{BLOCK, TILE};
    use std::arch::asm;

    /// The 64-byte tile configuration: palette 1, eight tiles of 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    const CONFIG: Config = {
        let mut bytes = [0u8; 64];
        bytes[0] = 1;
        let mut tile = 0;
        while tile < 8 {
            bytes[16 + 2 * tile] = 64;
            bytes[48 + tile] = TILE as u8;
            tile += 1;
        }
        Config(bytes)
    };

    /// `tileloadd tmm{N}, [base + stride]`, `tilestored [base + stride], tmm{N}` and
    /// `tdpbf16ps tmm{C}, tmm{A}, tmm{B}` with the registers fixed in the text.
    macro_rules! tile_load {
        ($tile:literal, $base:expr, $stride:expr) => {
            asm!(concat!("tileloadd tmm", $tile, ", [{0} + {1}*1]"), in(reg) $base, in(reg) $stride, options(nostack, readonly))
        };
    }
    macro_rules! tile_store {
        ($tile:literal, $base:expr, $stride:expr) => {
            asm!(concat!("tilestored [{0} + {1}*1], tmm", $tile), in(reg) $base, in(reg) $stride, options(nostack))
        };
    }
    macro_rules! tile_dot {
        ($c:literal, $a:literal, $b:literal) => {
            asm!(concat!("tdpbf16ps tmm", $c, ", tmm", $a, ", tmm", $b), options(nostack, nomem))
        };
    }

    /// `dst += left · x` for one band of `rows` rows. Output blocks of 32 × 32 in tiles 0–3
    /// (rows r, r+16 × columns c, c+16), A in tiles 4–5, B in tiles 6–7. A block that lies
    /// wholly inside `dst` is loaded and stored in place; one at the edges goes through a
    /// scratch block, so the padding rows and the columns past `columns` (which read the
    /// next pair row's lanes, or `x`'s spare lanes) never reach `dst`.
    ///
    /// # Safety
    /// AMX must be available to this process; `left` holds `⌈rows/32⌉·32 × padded_pairs`
    /// lanes, `x` `padded_pairs × columns + 32`, `dst` `rows × columns`.
    pub(super) unsafe fn band_product(
        dst: &mut [f32],
        left: &[u32],
        x: &[u32],
        (rows, padded_pairs, columns): (usize, usize, usize),
    ) {
        let mut scratch = [0.0f32; BLOCK * BLOCK];
        let (left_stride, x_stride) = (padded_pairs * 4, columns * 4);
        // SAFETY: every tile load reads 16 rows of 64 bytes at the given stride, inside the
        // slices by the sizes above; stores write inside `dst` or `scratch`.
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
            for r in (0..rows).step_by(BLOCK) {
                for c in (0..columns).step_by(BLOCK) {
                    let inside = r + BLOCK <= rows && c + BLOCK <= columns;
                    let (height, width) = ((rows - r).min(BLOCK), (columns - c).min(BLOCK));
                    let (out, out_stride) = if inside {
                        (dst.as_mut_ptr().add(r * columns + c), x_stride)
                    } else {
                        scratch.fill(0.0);
                        for (i, row) in scratch.chunks_exact_mut(BLOCK).take(height).enumerate() {
                            row[..width].copy_from_slice(&dst[(r + i) * columns + c..][..width]);
                        }
                        (scratch.as_mut_ptr(), BLOCK * 4)
                    };
                    tile_load!("0", out, out_stride);
                    tile_load!("1", out.add(TILE), out_stride);
                    tile_load!("2", out.add(TILE * out_stride / 4), out_stride);
                    tile_load!("3", out.add(TILE * out_stride / 4 + TILE), out_stride);
                    for p in (0..padded_pairs).step_by(TILE) {
                        let a = left.as_ptr().add(r * padded_pairs + p);
                        tile_load!("4", a, left_stride);
                        tile_load!("5", a.add(TILE * padded_pairs), left_stride);
                        let b = x.as_ptr().add(p * columns + c);
                        tile_load!("6", b, x_stride);
                        tile_load!("7", b.add(TILE), x_stride);
                        tile_dot!("0", "4", "6");
                        tile_dot!("1", "4", "7");
                        tile_dot!("2", "5", "6");
                        tile_dot!("3", "5", "7");
                    }
                    tile_store!("0", out, out_stride);
                    tile_store!("1", out.add(TILE), out_stride);
                    tile_store!("2", out.add(TILE * out_stride / 4), out_stride);
                    tile_store!("3", out.add(TILE * out_stride / 4 + TILE), out_stride);
                    if !inside {
                        for (i, row) in scratch.chunks_exact(BLOCK).take(height).enumerate() {
                            dst[(r + i) * columns + c..][..width].copy_from_slice(&row[..width]);
                        }
                    }
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }
}

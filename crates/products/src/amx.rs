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
//! the pair (k, k+1) of one column). Both operands are rounded and laid out in whole tiles,
//! each tile's 1 KB contiguous ([`TileRows`] for the left operand, the right one per
//! product): a tile load then reads 16 consecutive cache lines. Loaded from the operands'
//! own row-major layouts instead, a B tile of a 3,200-column product read 16 lines 12.8 KB
//! apart, and the products ran at 440–510 GFLOP/s on the Xeon measured; in tiles, and
//! blocked so that A's rows stay in L1 and B's columns in L2, 740–1,030 GFLOP/s with the
//! rounding included (`make bench`'s matmul). Each thread computes 32 × 32 blocks of the
//! output in four C tiles from two A and two B tiles, over k in order (in blocks whose
//! partial sums are stored as float32 and loaded back, which changes no bit), so every
//! output is summed in one fixed order whatever the thread count.
//!
//! Rust has no stable AMX intrinsics; the few instructions are written in `asm!`, one
//! instruction a block (the tile registers are not Rust values, and no compiled code
//! touches them between blocks). Linux gives a process the tiles' 8 KB of state only on
//! request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), made once in [`available`].

use crate::mat::Mat;
use rayon::prelude::*;
use std::mem::MaybeUninit;
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

/// Lanes (32-bit k pairs) in one tile: 16 rows of 16.
const TILE_LANES: usize = TILE * TILE;
/// Pairs of k summed into the output tiles between one load and store of them: A's 32
/// rows and B's columns of a block stay in the L1 and L2 caches over this depth.
const DEPTH_BLOCK: usize = 32 * TILE;
/// Output columns whose B tiles stay in the L2 cache while every row block passes over
/// them: 128 columns × 512 pairs × 4 bytes = 256 KB.
const COLUMN_BLOCK: usize = 4 * BLOCK;

/// The left operand of a tile product: rounded to bfloat16 and cut into tiles of 16 rows ×
/// 16 k pairs, each tile's 1 KB contiguous, so a tile load reads consecutive cache lines.
/// Tiles go k-chunk after k-chunk within a 16-row block, the blocks one after another;
/// rows are padded to a multiple of [`BLOCK`] and pairs to a multiple of [`TILE`] with zeros.
/// Invariant: `data` holds `⌈rows/32⌉·32 · chunks · 16` lanes.
pub struct TileRows {
    rows: usize,
    /// Tiles of 16 pairs along k.
    chunks: usize,
    data: Vec<u32>,
}

/// Rows (or columns) one task of [`tile_blocks`] rounds and lays out: 8 blocks, so that
/// reading down a row-major source takes 1 KB of each row at a time.
const FILL_GROUP: usize = 8 * BLOCK;

/// Fills `lanes`, the tiles of the rows `first..first + count` (at most [`FILL_GROUP`]) of
/// `a` rounded to bfloat16 pairs along its columns (k), one tile of 16 rows × 16 pairs at
/// a time: read from `a` in the order its memory runs (along a row where rows are
/// contiguous, else down the columns), rounded a whole run at once (loops the compiler
/// vectorises), then stored row-major for an A tile or, `transposed`, pair-major for a B
/// tile — transposing the 16 × 16 block where the two orders differ.
fn fill_block(lanes: &mut [u32], a: Mat, (first, count, chunks): (usize, usize, usize), transposed: bool) {
    let depth = a.cols;
    let pair = crate::bfloat::pair;
    let by_columns = a.row(0).is_none() && a.column(0).is_some();
    for block in 0..count.div_ceil(TILE) {
        let (row0, rows) = (first + block * TILE, (count - block * TILE).min(TILE));
        for chunk in 0..chunks {
            let k0 = 2 * TILE * chunk;
            // `natural[i][j]`: row i, pair j (or, by columns, pair i, row j) of the tile.
            let mut natural = [[0u32; TILE]; TILE];
            if by_columns {
                for (j, lanes) in natural.iter_mut().enumerate().take(depth.saturating_sub(k0).div_ceil(2)) {
                    let low = &a.column(k0 + 2 * j).expect("columns are contiguous")[row0..][..rows];
                    match a.column(k0 + 2 * j + 1) {
                        Some(high) => {
                            let high = &high[row0..][..rows];
                            lanes.iter_mut().zip(low.iter().zip(high)).for_each(|(lane, (&l, &h))| *lane = pair(l, h));
                        }
                        None => lanes.iter_mut().zip(low).for_each(|(lane, &l)| *lane = pair(l, 0.0)),
                    }
                }
            } else {
                for (i, lanes) in natural.iter_mut().enumerate().take(rows) {
                    match a.row(row0 + i).map(|row| row.get(k0..k0 + 2 * TILE)) {
                        Some(Some(values)) => {
                            let values: &[f32; 2 * TILE] = values.try_into().expect("32 values");
                            for (j, lane) in lanes.iter_mut().enumerate() {
                                *lane = pair(values[2 * j], values[2 * j + 1]);
                            }
                        }
                        _ => {
                            let at = |k: usize| if k < depth { a.at(row0 + i, k) } else { 0.0 };
                            for (j, lane) in lanes.iter_mut().enumerate().take(depth.saturating_sub(k0).div_ceil(2)) {
                                *lane = pair(at(k0 + 2 * j), at(k0 + 2 * j + 1));
                            }
                        }
                    }
                }
            }
            let tile = &mut lanes[(block * chunks + chunk) * TILE_LANES..][..TILE_LANES];
            if by_columns == transposed {
                for (out, lanes) in tile.chunks_exact_mut(TILE).zip(&natural) {
                    out.copy_from_slice(lanes);
                }
            } else {
                for (i, lanes) in natural.iter().enumerate() {
                    for (j, &lane) in lanes.iter().enumerate() {
                        tile[j * TILE + i] = lane;
                    }
                }
            }
        }
    }
}

/// `a`'s rows as tiles, `[⌈rows/32⌉ blocks][2 × chunks tiles]`, for a left operand, or
/// (`transposed`) as B tiles for a right operand `aᵀ`: `(rows, chunks, lanes)`.
fn tile_blocks(a: Mat, transposed: bool) -> (usize, usize, Vec<u32>) {
    let (count, depth) = (a.rows, a.cols);
    let chunks = depth.div_ceil(2).div_ceil(TILE).max(1);
    let block_lanes = BLOCK * chunks * TILE;
    let mut data = vec![0u32; count.div_ceil(BLOCK) * block_lanes];
    data.par_chunks_mut(block_lanes * (FILL_GROUP / BLOCK)).enumerate().for_each(|(group, lanes)| {
        let first = group * FILL_GROUP;
        fill_block(lanes, a, (first, (count - first).min(FILL_GROUP), chunks), transposed);
    });
    (count, chunks, data)
}

impl TileRows {
    /// Packs `a` (any strides; a dense matrix and the transpose of one are read in order).
    pub fn new(a: Mat) -> Self {
        let (rows, chunks, data) = tile_blocks(a, false);
        TileRows { rows, chunks, data }
    }

    /// `dst = self · b` (`accumulate` false: `dst`'s values are never read) or `dst += self ·
    /// b` (`accumulate` true), for dense row-major `dst` `[rows, b.cols]`, the rows split into
    /// one band per thread. `b` is rounded and laid out in tiles of 16 columns here. Panics
    /// where [`available`] is false.
    ///
    /// # Safety
    /// Where `accumulate`, every value of `dst` must be initialised.
    pub unsafe fn product_into(&self, dst: &mut [MaybeUninit<f32>], b: Mat, threads: usize, accumulate: bool) {
        assert!(available(), "tile products need AMX, which this processor or system lacks");
        let (columns, b_chunks, right) = tile_blocks(b.t(), true);
        assert_eq!(b_chunks, self.chunks, "inner dimensions differ");
        assert!(dst.len() >= self.rows * columns, "tile product out of bounds");
        if self.rows == 0 || columns == 0 {
            return;
        }
        crate::mat::in_row_bands(dst, (self.rows, columns), BLOCK, threads, |first, dst_band| {
            let rows = dst_band.len() / columns;
            let left = &self.data[first * self.chunks * TILE..][..rows.next_multiple_of(BLOCK) * self.chunks * TILE];
            // SAFETY: AMX is available and granted (asserted above); the band holds its
            // rows × columns outputs, initialised where `accumulate` (the caller's
            // contract); the operands hold whole 32-row and 32-column blocks of tiles.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                kernels::band_product(
                    dst_band.as_mut_ptr().cast(),
                    left,
                    &right,
                    (rows, self.chunks, columns),
                    accumulate,
                )
            };
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("tile products run on x86-64 only: {}", left.len() + right.len());
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod kernels {
    use super::{BLOCK, COLUMN_BLOCK, DEPTH_BLOCK, TILE, TILE_LANES};
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

    /// `tileloadd tmm{N}, [base + stride]`, `tilestored [base + stride], tmm{N}`,
    /// `tilezero tmm{N}` and `tdpbf16ps tmm{C}, tmm{A}, tmm{B}` with the registers fixed in
    /// the text.
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
    macro_rules! tile_zero {
        ($tile:literal) => {
            asm!(concat!("tilezero tmm", $tile), options(nostack, nomem))
        };
    }
    macro_rules! tile_dot {
        ($c:literal, $a:literal, $b:literal) => {
            asm!(concat!("tdpbf16ps tmm", $c, ", tmm", $a, ", tmm", $b), options(nostack, nomem))
        };
    }

    /// `dst (+)= left · right` for one band of `rows` rows. Output blocks of 32 × 32 in tiles
    /// 0–3 (rows r, r+16 × columns c, c+16), A in tiles 4–5, B in tiles 6–7, every operand
    /// tile 1 KB of consecutive memory. Loops, outermost first: k in blocks of
    /// [`DEPTH_BLOCK`] pairs, columns in blocks of [`COLUMN_BLOCK`] (their B tiles stay in
    /// L2), 32-row blocks (their A tiles stay in L1), 32-column blocks, then k. The first
    /// k block starts from zero tiles unless `accumulate`; later ones add to what the first
    /// stored. A block that lies wholly inside `dst` is loaded and stored in place; one at
    /// the edges goes through a scratch block, so padding never reaches `dst`.
    ///
    /// # Safety
    /// AMX must be available to this process; `left` holds `⌈rows/32⌉·32 × chunks` tiles'
    /// rows, `right` `⌈columns/32⌉·32` columns' as many; `dst` is valid for `rows × columns`
    /// floats (initialised where `accumulate`).
    pub(super) unsafe fn band_product(
        dst: *mut f32,
        left: &[u32],
        right: &[u32],
        (rows, chunks, columns): (usize, usize, usize),
        accumulate: bool,
    ) {
        let mut scratch = [0.0f32; BLOCK * BLOCK];
        let (tile_stride, dst_stride) = (TILE * 4, columns * 4);
        let depth_chunks = DEPTH_BLOCK / TILE;
        // SAFETY: tile loads read 16 rows of 64 bytes inside `left`, `right` (by their sizes)
        // or inside the rows × columns of `dst` or `scratch`; stores write only there.
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
            for k0 in (0..chunks).step_by(depth_chunks) {
                let k1 = (k0 + depth_chunks).min(chunks);
                let from_zero = k0 == 0 && !accumulate;
                for c0 in (0..columns).step_by(COLUMN_BLOCK) {
                    for r in (0..rows).step_by(BLOCK) {
                        for c in (c0..(c0 + COLUMN_BLOCK).min(columns)).step_by(BLOCK) {
                            let inside = r + BLOCK <= rows && c + BLOCK <= columns;
                            let (height, width) = ((rows - r).min(BLOCK), (columns - c).min(BLOCK));
                            let (out, out_stride) = if inside {
                                (dst.add(r * columns + c), dst_stride)
                            } else {
                                if !from_zero {
                                    for i in 0..height {
                                        let row = dst.add((r + i) * columns + c);
                                        std::ptr::copy_nonoverlapping(row, scratch.as_mut_ptr().add(i * BLOCK), width);
                                    }
                                }
                                (scratch.as_mut_ptr(), BLOCK * 4)
                            };
                            let out_below = out.add(TILE * out_stride / 4);
                            if from_zero {
                                tile_zero!("0");
                                tile_zero!("1");
                                tile_zero!("2");
                                tile_zero!("3");
                            } else {
                                tile_load!("0", out, out_stride);
                                tile_load!("1", out.add(TILE), out_stride);
                                tile_load!("2", out_below, out_stride);
                                tile_load!("3", out_below.add(TILE), out_stride);
                            }
                            let a = left.as_ptr().add(r * chunks * TILE);
                            let b = right.as_ptr().add(c * chunks * TILE);
                            for k in k0..k1 {
                                tile_load!("4", a.add(k * TILE_LANES), tile_stride);
                                tile_load!("5", a.add((chunks + k) * TILE_LANES), tile_stride);
                                tile_load!("6", b.add(k * TILE_LANES), tile_stride);
                                tile_load!("7", b.add((chunks + k) * TILE_LANES), tile_stride);
                                tile_dot!("0", "4", "6");
                                tile_dot!("1", "4", "7");
                                tile_dot!("2", "5", "6");
                                tile_dot!("3", "5", "7");
                            }
                            tile_store!("0", out, out_stride);
                            tile_store!("1", out.add(TILE), out_stride);
                            tile_store!("2", out_below, out_stride);
                            tile_store!("3", out_below.add(TILE), out_stride);
                            if !inside {
                                for i in 0..height {
                                    let row = dst.add((r + i) * columns + c);
                                    std::ptr::copy_nonoverlapping(scratch.as_ptr().add(i * BLOCK), row, width);
                                }
                            }
                        }
                    }
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }
}

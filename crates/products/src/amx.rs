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

/// Whether the products may use AMX: the processor has AMX-TILE and AMX-BF16 (and AVX-512
/// BF16, whose conversions round the operands into tiles) and the kernel granted this
/// process the tile state. Asked once.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            // CPUID leaf 7, sub-leaf 0: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
            let features = std::arch::x86_64::__cpuid_count(7, 0).edx;
            let has_tiles = features & (1 << 22) != 0 && features & (1 << 24) != 0;
            // SAFETY: arch_prctl only changes this process's permissions.
            has_tiles && crate::bfloat::available() && unsafe { request_tile_state() }
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
/// rows are padded with zeros to a multiple of 32, and pairs to a multiple of 16.
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

/// `a`'s rows as tiles, `[⌈rows/32⌉ blocks][2 × chunks tiles]`, for a left operand, or
/// (`transposed`) as B tiles for a right operand `aᵀ`: `(rows, chunks, lanes)`. Every lane
/// is written (padding rows and pairs as zeros), so the buffer is never zeroed first.
/// Panics where [`crate::bfloat::available`] is false: the values are rounded by AVX-512
/// BF16's own conversions.
fn tile_blocks(a: Mat, transposed: bool) -> (usize, usize, Vec<u32>) {
    assert!(crate::bfloat::available(), "tiles are rounded by AVX-512 BF16, which this processor lacks");
    let (count, depth) = (a.rows, a.cols);
    let chunks = depth.div_ceil(2).div_ceil(TILE).max(1);
    let block_lanes = BLOCK * chunks * TILE;
    let len = count.div_ceil(BLOCK) * block_lanes;
    let mut data = Vec::with_capacity(len);
    data.spare_capacity_mut()[..len].par_chunks_mut(block_lanes * (FILL_GROUP / BLOCK)).enumerate().for_each(
        |(group, lanes)| {
            let first = group * FILL_GROUP;
            let (tiles_down, by_columns) = (lanes.len() / (chunks * TILE_LANES), a.row(0).is_none());
            let mut fill = |block: usize, chunk: usize| {
                let tile = &mut lanes[(block * chunks + chunk) * TILE_LANES..][..TILE_LANES];
                let rows = (first + block * TILE, count.saturating_sub(first + block * TILE).min(TILE));
                // SAFETY: the processor has AVX-512F and AVX-512 BF16 (asserted above).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    fill::tile(tile, a, rows, 2 * TILE * chunk, transposed)
                };
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("tiles are filled on x86-64 only: {}", tile.len() + rows.0);
            };
            // Along a row-major source, a block's 16 rows through all of k; down a column-major
            // one, a chunk's 32 runs through all the group's rows, each tile asking for what
            // the tile after next reads of them (read 64 bytes from each of 32 runs at a time
            // without, B tiles of a [2048, 3200] dP took 2.7 ms instead of 1.0-1.7 on the AMD
            // EPYC measured: the loads waited on memory).
            if by_columns {
                (0..chunks).for_each(|chunk| (0..tiles_down).for_each(|block| fill(block, chunk)));
            } else {
                (0..tiles_down).for_each(|block| (0..chunks).for_each(|chunk| fill(block, chunk)));
            }
        },
    );
    // SAFETY: the groups cover all `len` lanes and `fill::tile` writes every lane of each tile.
    unsafe { data.set_len(len) };
    (count, chunks, data)
}

/// Rounding one tile, by AVX-512 BF16's conversions.
#[cfg(target_arch = "x86_64")]
mod fill {
    use super::TILE;
    use crate::avx512::{first_lanes, transpose16};
    use crate::bfloat::pair_lanes;
    use crate::mat::Mat;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Writes `tile` (16 × 16 lanes): rows `row0 .. row0 + rows` (at most 16; the rest zero)
    /// of `a` rounded to bfloat16 pairs along k from `k0` (16 pairs; those past `a`'s
    /// columns zero), lane `(i, j)` = row i, pair j at `16·i + j` for an A tile, or at
    /// `16·j + i` (`transposed`) for a B tile. Each register is rounded from the source's
    /// own runs — a row's 32 values, or (the transpose of a dense matrix) two columns' 16 —
    /// and the 16 registers are transposed where the tile's order differs. Float32
    /// subnormals become zero, as in the `vdpbf16ps` panels ([`crate::bfloat::round`] would
    /// keep them as bfloat16 subnormals: products below 10⁻³⁷ of their other factor).
    ///
    /// # Safety
    /// The processor must have AVX-512F and AVX-512 BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn tile(
        tile: &mut [MaybeUninit<u32>],
        a: Mat,
        (row0, rows): (usize, usize),
        k0: usize,
        transposed: bool,
    ) {
        assert!(tile.len() == TILE * TILE && rows <= TILE && (rows == 0 || row0 + rows <= a.rows));
        let depth = a.cols;
        let values = depth.saturating_sub(k0).min(2 * TILE);
        let pairs = values.div_ceil(2);
        let mut natural = [_mm512_setzero_ps(); TILE];
        // Whether `natural[j]` holds pair j of each row (else row i's pairs).
        let mut by_pairs = false;
        if rows > 0 && pairs > 0 {
            if a.row(0).is_some() {
                let (low, high) = (first_lanes(values), first_lanes(values.saturating_sub(16)));
                for (i, register) in natural.iter_mut().enumerate().take(rows) {
                    let run = &a.row(row0 + i).expect("rows in place")[k0..k0 + values];
                    // SAFETY: the masks select only the run's values; the second pointer
                    // stays inside it.
                    unsafe {
                        let first = _mm512_maskz_loadu_ps(low, run.as_ptr());
                        let second = _mm512_maskz_loadu_ps(high, run.as_ptr().add(16.min(values)));
                        *register = std::mem::transmute::<__m512bh, __m512>(_mm512_cvtne2ps_pbh(second, first));
                    }
                }
            } else if a.column(0).is_some() {
                by_pairs = true;
                let lanes = first_lanes(rows);
                let column = |k: usize| match a.column(k) {
                    Some(column) if k < depth => {
                        if let Some(later) = column.get(row0 + 2 * TILE..) {
                            _mm_prefetch::<_MM_HINT_T0>(later.as_ptr().cast());
                        }
                        // SAFETY: the mask selects the `rows` values that exist.
                        unsafe { _mm512_maskz_loadu_ps(lanes, column[row0..][..rows].as_ptr()) }
                    }
                    _ => _mm512_setzero_ps(),
                };
                for (j, register) in natural.iter_mut().enumerate().take(pairs) {
                    *register = _mm512_castsi512_ps(pair_lanes(column(k0 + 2 * j), column(k0 + 2 * j + 1)));
                }
            } else {
                for (i, register) in natural.iter_mut().enumerate().take(rows) {
                    let at = |k: usize| if k < depth { a.at(row0 + i, k) } else { 0.0 };
                    let lanes: [u32; TILE] =
                        std::array::from_fn(|j| crate::bfloat::pair(at(k0 + 2 * j), at(k0 + 2 * j + 1)));
                    // SAFETY: 16 values are read from an array of 16.
                    *register = unsafe { _mm512_castsi512_ps(_mm512_loadu_si512(lanes.as_ptr().cast())) };
                }
            }
        }
        let stored = if by_pairs == transposed { natural } else { transpose16(natural) };
        for (r, register) in stored.iter().enumerate() {
            // SAFETY: the tile holds 16 rows of 16 lanes (asserted above).
            unsafe { _mm512_storeu_ps(tile.as_mut_ptr().add(r * TILE).cast(), *register) };
        }
    }
}

impl TileRows {
    /// Packs `a` (any strides; a dense matrix and the transpose of one are read in order).
    /// Panics where [`crate::bfloat::available`] is false.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bfloat::pair;
    use seeded_rng::SeededRng;

    /// Every lane of both tile layouts against its definition: in 16-row block b, chunk c,
    /// lane (i, j) — at 16·i + j of an A tile, 16·j + i of a B tile — holds row 16·b + i and
    /// pair 16·c + j of the source, rounded as `pair` rounds, and zero past the source's
    /// rows or columns. Sources read along rows, down columns and with neither stride 1;
    /// sizes around the 16-row, 32-value and 256-row steps of the filling. Runs wherever
    /// AVX-512 BF16 is, since filling tiles uses no tile instruction.
    #[test]
    fn tiles_hold_each_pair_where_the_tile_unit_reads_it() {
        if !crate::bfloat::available() {
            eprintln!("skipped: tiles_hold_each_pair_where_the_tile_unit_reads_it: this CPU has no AVX-512 BF16");
            return;
        }
        let mut rng = SeededRng::new(8, "tile layout test");
        for (rows, depth) in [(1, 1), (5, 3), (16, 32), (17, 33), (40, 70), (33, 100), (300, 45), (20, 600)] {
            let values: Vec<f32> = (0..2 * rows * depth).map(|_| rng.unit_f32() * 2.0 - 1.0).collect();
            let dense = Mat::dense(&values, rows, depth);
            let by_columns = Mat::dense(&values, depth, rows).t();
            let strided = Mat { data: &values, offset: 1, rows, cols: depth, row_stride: 1, col_stride: 2 * rows };
            for (name, a) in [("along rows", dense), ("down columns", by_columns), ("strided", strided)] {
                for transposed in [false, true] {
                    let (count, chunks, lanes) = tile_blocks(a, transposed);
                    assert_eq!((count, chunks), (rows, depth.div_ceil(2).div_ceil(TILE)));
                    assert_eq!(lanes.len(), rows.div_ceil(BLOCK) * BLOCK * chunks * TILE);
                    for (index, &lane) in lanes.iter().enumerate() {
                        let (tile, within) = (index / TILE_LANES, index % TILE_LANES);
                        let (block, chunk) = (tile / chunks, tile % chunks);
                        let (i, j) =
                            if transposed { (within % TILE, within / TILE) } else { (within / TILE, within % TILE) };
                        let (row, k) = (TILE * block + i, 2 * (TILE * chunk + j));
                        let at = |k: usize| if row < rows && k < depth { a.at(row, k) } else { 0.0 };
                        let place = format!("{name}, transposed {transposed}, {rows} × {depth}: row {row}, k {k}");
                        assert_eq!(lane, pair(at(k), at(k + 1)), "{place}");
                    }
                }
            }
        }
    }
}

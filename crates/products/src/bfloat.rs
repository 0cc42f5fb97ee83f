//! The bfloat16 number format: float32 with the low 16 bits of the mantissa dropped (8 bits
//! of precision, float32's range), as the bfloat16 products read their operands.

/// `x` rounded to the nearest bfloat16 (ties to even), as its 16 bits. NaN stays NaN.
/// Written as a select rather than an early return so that loops over it vectorise.
#[inline(always)]
pub fn round(x: f32) -> u16 {
    let bits = x.to_bits();
    let nearest = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
    let quiet_nan = (bits >> 16) | 0x40;
    (if x.is_nan() { quiet_nan } else { nearest }) as u16
}

/// The float32 value of a bfloat16.
#[inline(always)]
pub fn widen(half: u16) -> f32 {
    f32::from_bits(u32::from(half) << 16)
}

/// Two values rounded to bfloat16 in one 32-bit lane, `low` in the low half: a k pair as
/// both kinds of product read it.
#[inline(always)]
pub(crate) fn pair(low: f32, high: f32) -> u32 {
    u32::from(round(low)) | u32::from(round(high)) << 16
}

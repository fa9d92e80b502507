//! Checks that the C library's `expf` (`f32::exp`) is `+0` for every float below
//! `ahr_policy::ops::EXP_ZERO_BELOW` (−104), negative infinity included — what lets
//! `exp_in_place` skip the call there. `cargo run --release -p ahr-policy --example exp_underflow`
use ahr_policy::ops::EXP_ZERO_BELOW;

fn main() {
    // Negative floats are the bit patterns 0x8000_0000..=0xff80_0000, more negative as they grow.
    let first = (-EXP_ZERO_BELOW).to_bits() | 0x8000_0000;
    let (mut checked, mut nonzero) = (0u64, 0u64);
    for bits in first..=0xff80_0000u32 {
        let x = f32::from_bits(bits);
        if x >= EXP_ZERO_BELOW {
            continue;
        }
        checked += 1;
        if x.exp().to_bits() != 0 {
            nonzero += 1;
            if nonzero <= 10 {
                println!("expf({x:e}) = {:e}", x.exp());
            }
        }
    }
    println!("floats below {EXP_ZERO_BELOW} (to -inf): {checked}, expf not +0 on {nonzero}");
}

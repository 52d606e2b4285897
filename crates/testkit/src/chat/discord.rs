//! A fake Discord (to come).

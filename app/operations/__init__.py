"""Operations: health, readiness, metrics and the upstream circuit state."""

"""``textgrad.utils``: helpers TextGrad keeps outside its main modules."""

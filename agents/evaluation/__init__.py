"""What a trained agent is used for and measured by: the probes, value-guided search,
learned rewards, the SB3 extractor and the encoder export."""

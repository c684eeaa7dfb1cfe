//! RESP2/RESP3 wire format: request decoding, reply scanning, values for the control path.

"""The core of funcsplit (private: import names from `funcsplit`)."""

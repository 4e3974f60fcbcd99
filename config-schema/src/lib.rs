//! The configuration of one routerd box, shared by the image and `routerctl`.
#![no_std]

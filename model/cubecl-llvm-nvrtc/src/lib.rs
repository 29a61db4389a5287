//! mmtt's stand-in for `cubecl-llvm`, so that `cargo build --features cuda` needs no LLVM.
//!
//! burn 0.22.1's CUDA backend is cubecl-cuda 0.11, which carries two kernel compilers: CUDA C++
//! handed to NVRTC at run time (its `cpp` feature makes it the one used), and a pliron/LLVM
//! lowering to PTX in the crate `cubecl-llvm`. cubecl-cuda depends on `cubecl-llvm` whichever
//! compiler it uses, and that crate links LLVM 23.1 statically: its build script has
//! `tracel-llvm-bundler` download the LLVM bundle from GitHub, which no machine of this project
//! can reach and no registry it can reach serves.
//!
//! mmtt's `cuda` feature turns on cubecl-cuda's `cpp` compiler (what the FPN and talker issues
//! ask for: kernels compiled at run time through NVRTC, no CUDA toolkit at build time), and the
//! root Cargo.toml's `[patch.crates-io]` puts this crate in the place of `cubecl-llvm`. It has
//! only the items cubecl-cuda names:
//! - [`PlironCompiler`] refuses every kernel with an error that says why (the NVRTC compiler is
//!   the one selected, so it is never asked);
//! - [`nvptx::ptx_version::PtxVersion`] is a key in cubecl-cuda's kernel cache that only the LLVM
//!   compiler reads: [`PtxVersion::for_driver`](nvptx::ptx_version::PtxVersion::for_driver)
//!   answers `None`;
//! - [`shared::lowered_features::restrict_features`] narrows a device's features for the LLVM
//!   compiler; cubecl-cuda calls it only when that compiler is selected, and here it leaves them.
//!
//! It does not stand in for what cubecl-cpu (burn's `cpu` backend) or cubecl-hip (`rocm`) use
//! from `cubecl-llvm`: mmtt builds neither.

use cubecl_core::ir::nvidia::SmArch;
use cubecl_core::prelude::KernelDefinition;
use cubecl_environment::backtrace::BackTrace;
use cubecl_server::compiler::{CompilationError, Compiler};
use cubecl_server::kernel::BufferIOAttr;

/// What the LLVM compiler compiles for. Only the NVPTX target is named by cubecl-cuda.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LlvmTarget {
    #[default]
    Nvptx,
}

/// The LLVM compiler's place in cubecl-cuda; it refuses every kernel.
#[derive(Clone, Debug, Default)]
pub struct PlironCompiler {
    pub target: LlvmTarget,
}

/// The LLVM compiler's options, as cubecl-cuda fills them.
#[derive(Clone, Debug, Default)]
pub struct PlironOptions {
    /// AMD architecture: never set by cubecl-cuda.
    pub arch: Option<()>,
    pub sm_arch: Option<SmArch>,
    pub ptx_version: Option<nvptx::ptx_version::PtxVersion>,
    pub grid_constants: bool,
}

/// A PTX module as the LLVM compiler would give it. None is ever made here.
#[derive(Clone, Debug)]
pub struct NvptxModule {
    pub ptx: Vec<core::ffi::c_char>,
    pub entrypoint: String,
    pub ir: String,
    pub shared_memory_size: usize,
    pub io: Vec<BufferIOAttr>,
}

/// What the LLVM compiler returns.
#[derive(Clone, Debug)]
pub enum PlironArtifact {
    NvptxCode(NvptxModule),
}

impl core::fmt::Display for PlironArtifact {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlironArtifact::NvptxCode(m) => f.write_str(&m.ir),
        }
    }
}

/// The reason every kernel is refused.
pub const NOT_BUILT: &str = "this build of mmtt has no LLVM kernel compiler (cubecl-llvm is replaced by model/cubecl-llvm-nvrtc); \
     kernels are compiled by NVRTC, which the `cuda` feature selects through cubecl-cuda's `cpp` feature: \
     a build that reached the LLVM compiler enabled the `cuda` feature without it";

impl Compiler for PlironCompiler {
    type Representation = PlironArtifact;
    type CompilationOptions = PlironOptions;

    fn compile(&mut self, _kernel: KernelDefinition, _options: &PlironOptions) -> Result<PlironArtifact, CompilationError> {
        Err(CompilationError::Generic { reason: NOT_BUILT.to_string(), backtrace: BackTrace::capture() })
    }

    fn buffer_io(repr: &PlironArtifact) -> Option<Vec<BufferIOAttr>> {
        match repr {
            PlironArtifact::NvptxCode(m) => Some(m.io.clone()),
        }
    }

    fn extension(&self) -> &'static str {
        "ll"
    }

    fn lang_tag(&self) -> &'static str {
        "llvm"
    }
}

pub mod nvptx {
    //! The NVPTX names cubecl-cuda uses.
    pub mod ptx_version {
        //! The PTX version the LLVM compiler would emit.

        /// A PTX ISA version (8.7 is `87`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct PtxVersion(pub u32);

        impl PtxVersion {
            /// The version the LLVM compiler would emit for CUDA driver `driver`: only that
            /// compiler reads it (as a kernel cache key and target feature), and it is not built
            /// here, so there is none. NVRTC writes its own version into the PTX it makes.
            pub fn for_driver(_driver: i32) -> Option<Self> {
                None
            }
        }

        impl core::fmt::Display for PtxVersion {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "ptx{}", self.0)
            }
        }
    }
}

pub mod shared {
    //! The shared names cubecl-cuda uses.
    pub mod lowered_features {
        //! Which device features the LLVM compiler lowers.
        use cubecl_core::ir::DeviceProperties;

        /// The GPU target a device's features would be narrowed for.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum GpuTarget {
            Nvptx,
        }

        /// Narrows `props` to what the LLVM compiler lowers. cubecl-cuda calls it only when that
        /// compiler is the selected one, which it never is with mmtt's `cuda` feature; the NVRTC
        /// compiler supports what the device reports, so the features are left as they are.
        pub fn restrict_features(_props: &mut DeviceProperties, _target: GpuTarget) {}
    }
}

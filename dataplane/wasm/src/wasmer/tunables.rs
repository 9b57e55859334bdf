//! Per-run [`Tunables`]: the `memoryMB` limit (as in wasmer's `tunables_limit_memory` example, but
//! a growth past the limit stops the guest instead of returning -1, like wasmtime's limiter),
//! and the hook that hands the metering global of the new instance to its [`Run`]. The
//! memory's current size is kept in [`Run::memory`] (the apps' memory gauge).

use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use wasmer::sys::vm::{
    InternalStoreHandle, LinearMemory, MemoryError, MemoryStyle, NotifyLocation, StoreObjects,
    TableStyle, ThreadConditions, Trap, VMConfig, VMGlobal, VMMemory, VMMemoryDefinition, VMTable,
    VMTableDefinition, WaiterError,
};
use wasmer::sys::{BaseTunables, Tunables};
use wasmer::{ExportIndex, MemoryType, Pages, TableType, WASM_PAGE_SIZE};
use wasmer_compiler::LinkError;
use wasmer_types::entity::PrimaryMap;
use wasmer_types::{LocalGlobalIndex, ModuleInfo};

use super::run::{Run, Stop};

/// The export the `Metering` middleware gives its remaining-points global.
const REMAINING_POINTS: &str = "wasmer_metering_remaining_points";

pub struct RunTunables {
    base: BaseTunables,
    memory_limit: u64,
    run: Arc<Run>,
}

impl RunTunables {
    pub fn new(memory_limit: u64, run: Arc<Run>) -> Self {
        RunTunables {
            base: BaseTunables::for_target(&wasmer::sys::Target::default()),
            memory_limit,
            run,
        }
    }

    /// Refuses a memory whose initial size is already above the limit.
    fn admit(&self, ty: &MemoryType) -> Result<(), MemoryError> {
        let wanted = bytes(ty.minimum);
        if wanted > self.memory_limit {
            self.run.stop(Stop::MemoryLimit(wanted));
            return Err(MemoryError::MinimumMemoryTooLarge {
                min_requested: ty.minimum,
                max_allowed: Pages((self.memory_limit / WASM_PAGE_SIZE as u64) as u32),
            });
        }
        Ok(())
    }

    fn limited(&self, memory: VMMemory) -> VMMemory {
        VMMemory::from_custom(Box::new(LimitedMemory {
            inner: memory,
            limit: self.memory_limit,
            run: self.run.clone(),
        }) as Box<dyn LinearMemory>)
    }
}

fn bytes(pages: Pages) -> u64 {
    u64::from(pages.0) * WASM_PAGE_SIZE as u64
}

impl Tunables for RunTunables {
    // Styles must be those the module was compiled with (by an engine with `BaseTunables`).
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        self.base.memory_style(memory)
    }

    fn table_style(&self, table: &TableType) -> TableStyle {
        self.base.table_style(table)
    }

    fn create_host_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
    ) -> Result<VMMemory, MemoryError> {
        self.admit(ty)?;
        self.run.memory.store(bytes(ty.minimum), Ordering::Relaxed);
        Ok(self.limited(self.base.create_host_memory(ty, style)?))
    }

    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        self.admit(ty)?;
        self.run.memory.store(bytes(ty.minimum), Ordering::Relaxed);
        // SAFETY: forwarded from the caller's contract.
        let memory = unsafe {
            self.base
                .create_vm_memory(ty, style, vm_definition_location)?
        };
        Ok(self.limited(memory))
    }

    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        self.base.create_host_table(ty, style)
    }

    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.base.create_vm_table(ty, style, vm_definition_location) }
    }

    /// Creates the globals as usual, then arms the run with the metering global before any guest
    /// code (the start function included) can execute.
    fn create_globals(
        &self,
        context: &mut StoreObjects,
        module: &ModuleInfo,
    ) -> Result<PrimaryMap<LocalGlobalIndex, InternalStoreHandle<VMGlobal>>, LinkError> {
        let globals = self.base.create_globals(context, module)?;
        let local = match module.exports.get(REMAINING_POINTS) {
            Some(ExportIndex::Global(index)) => module.local_global_index(*index),
            _ => None,
        };
        let Some(local) = local else {
            return Err(LinkError::Resource(
                "the module was not compiled with metering".into(),
            ));
        };
        let definition = globals[local].get(context).vmglobal();
        // SAFETY: the definition is boxed inside the `VMGlobal` that `context` (the store's
        // objects) now owns, so it stays at this address until the store is dropped; the run is
        // disarmed before that (`run::Disarm`, declared after the store in `WasmerModule::run`).
        // `val` is a `RawValue` union whose `i64` member is what the metering code accesses.
        unsafe {
            let val = std::ptr::addr_of_mut!((*definition.as_ptr()).val.i64);
            self.run.arm(NonNull::new_unchecked(val));
        }
        Ok(globals)
    }

    fn vmconfig(&self) -> &VMConfig {
        self.base.vmconfig()
    }
}

/// A linear memory that refuses to grow past `limit` and stops the run when asked to.
#[derive(Debug)]
struct LimitedMemory {
    inner: VMMemory,
    limit: u64,
    run: Arc<Run>,
}

impl LimitedMemory {
    fn check(&self, wanted: u64) -> Result<(), ()> {
        if wanted > self.limit {
            // `memory.grow` would return -1 and a guest allocator typically retries or spins
            // until the timeout: stop it now, as wasmtime's `ResourceLimiter` error does.
            self.run.stop(Stop::MemoryLimit(wanted));
            return Err(());
        }
        Ok(())
    }
}

impl LinearMemory for LimitedMemory {
    fn ty(&self) -> MemoryType {
        self.inner.ty()
    }

    fn size(&self) -> Pages {
        self.inner.size()
    }

    fn style(&self) -> MemoryStyle {
        self.inner.style()
    }

    fn grow(&mut self, delta: Pages) -> Result<Pages, MemoryError> {
        let current = self.inner.size();
        self.check(bytes(current) + bytes(delta))
            .map_err(|()| MemoryError::CouldNotGrow {
                current,
                attempted_delta: delta,
            })?;
        let grown = self.inner.grow(delta)?;
        self.run
            .memory
            .store(bytes(self.inner.size()), Ordering::Relaxed);
        Ok(grown)
    }

    fn grow_at_least(&mut self, min_size: u64) -> Result<(), MemoryError> {
        let current = self.inner.size();
        self.check(min_size)
            .map_err(|()| MemoryError::CouldNotGrow {
                current,
                attempted_delta: Pages(
                    (min_size.saturating_sub(bytes(current)) / WASM_PAGE_SIZE as u64) as u32,
                ),
            })?;
        self.inner.grow_at_least(min_size)?;
        self.run
            .memory
            .store(bytes(self.inner.size()), Ordering::Relaxed);
        Ok(())
    }

    fn reset(&mut self) -> Result<(), MemoryError> {
        self.inner.reset()
    }

    fn vmmemory(&self) -> NonNull<VMMemoryDefinition> {
        self.inner.vmmemory()
    }

    fn try_clone(&self) -> Result<Box<dyn LinearMemory + 'static>, MemoryError> {
        Ok(Box::new(LimitedMemory {
            inner: VMMemory(self.inner.try_clone()?),
            limit: self.limit,
            run: self.run.clone(),
        }))
    }

    unsafe fn initialize_with_data(&self, start: usize, data: &[u8]) -> Result<(), Trap> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.inner.initialize_with_data(start, data) }
    }

    fn copy(&mut self) -> Result<Box<dyn LinearMemory + 'static>, MemoryError> {
        Ok(Box::new(LimitedMemory {
            inner: VMMemory(self.inner.copy()?),
            limit: self.limit,
            run: self.run.clone(),
        }))
    }

    fn do_wait(
        &mut self,
        dst: NotifyLocation,
        timeout: Option<Duration>,
    ) -> Result<u32, WaiterError> {
        self.inner.do_wait(dst, timeout)
    }

    fn do_notify(&mut self, dst: NotifyLocation, count: u32) -> u32 {
        self.inner.do_notify(dst, count)
    }

    fn thread_conditions(&self) -> Option<&ThreadConditions> {
        self.inner.thread_conditions()
    }
}

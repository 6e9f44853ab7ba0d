//! The Ocean keeper contracts 0.13.2, as much of their interfaces as brizo calls. Written out
//! by hand (the selectors come from these signatures, which match the published artifacts) so
//! that building brizo does not need the artifacts; deploying does, for the bytecode.
//! Where a contract overloads a function, only the overload brizo uses is declared.

// The contracts' own signatures, whatever their argument counts.
#![allow(clippy::too_many_arguments)]

alloy::sol! {
    #[sol(rpc)]
    interface OceanToken {
        function initialize(address _owner, address _initialMinter) external;
        function approve(address spender, uint256 value) external returns (bool);
        function mint(address to, uint256 value) external returns (bool);
        function addMinter(address account) external;
        function transfer(address to, uint256 value) external returns (bool);
        function balanceOf(address owner) external view returns (uint256);
    }

    #[sol(rpc)]
    interface Dispenser {
        function initialize(address _oceanTokenAddress, address _owner) external;
    }

    #[sol(rpc)]
    interface DIDRegistry {
        function initialize(address _owner) external;
        function registerAttribute(bytes32 _did, bytes32 _checksum, address[] _providers, string _value) external returns (uint256 size);
        function transferDIDOwnership(bytes32 _did, address _newOwner) external;
        function getDIDRegister(bytes32 _did) external view returns (address owner, bytes32 lastChecksum, address lastUpdatedBy, uint256 blockNumberUpdated, address[] providers);
        function getBlockNumberUpdated(bytes32 _did) external view returns (uint256 blockNumberUpdated);
        function getDIDOwner(bytes32 _did) external view returns (address didOwner);
        event DIDAttributeRegistered(bytes32 indexed _did, address indexed _owner, bytes32 indexed _checksum, string _value, address _lastUpdatedBy, uint256 _blockNumberUpdated);
    }

    #[sol(rpc)]
    interface ConditionStoreManager {
        function initialize(address _owner) external;
        function delegateCreateRole(address delegatee) external;
        function getCondition(bytes32 _id) external view returns (address typeRef, uint8 state, uint256 timeLock, uint256 timeOut, uint256 blockNumber, address lastUpdatedBy, uint256 blockNumberUpdated);
        function getConditionState(bytes32 _id) external view returns (uint8);
    }

    #[sol(rpc)]
    interface TemplateStoreManager {
        function initialize(address _owner) external;
        function proposeTemplate(bytes32 _id, address[] _conditionTypes, bytes32[] _actorTypeIds, string name) external returns (uint256 size);
        function approveTemplate(bytes32 _id) external;
        function registerTemplateActorType(string _actorType) external returns (bytes32 actorTypeId);
        function getTemplateActorTypeId(string actorType) external view returns (bytes32);
        function getTemplate(bytes32 _id) external view returns (uint8 state, address owner, address lastUpdatedBy, uint256 blockNumberUpdated, address[] conditionTypes, bytes32[] actorTypes);
    }

    #[sol(rpc)]
    interface AgreementStoreManager {
        function initialize(address _owner, address _conditionStoreManagerAddress, address _templateStoreManagerAddress, address _didRegistryAddress) external;
        function createAgreement(bytes32 _id, bytes32 _did, bytes32 _templateId, bytes32[] _conditionIds, uint256[] _timeLocks, uint256[] _timeOuts, address[] _actors) external returns (uint256 size);
        function getAgreement(bytes32 _id) external view returns (bytes32 did, address didOwner, bytes32 templateId, bytes32[] conditionIds, address lastUpdatedBy, uint256 blockNumberUpdated);
    }

    #[sol(rpc)]
    interface LockRewardCondition {
        function initialize(address _owner, address _conditionStoreManagerAddress, address _tokenAddress) external;
        function hashValues(address _rewardAddress, uint256 _amount) external view returns (bytes32);
        function generateId(bytes32 _agreementId, bytes32 _valueHash) external view returns (bytes32);
        function fulfill(bytes32 _agreementId, address _rewardAddress, uint256 _amount) external returns (uint8);
    }

    #[sol(rpc)]
    interface EscrowReward {
        function initialize(address _owner, address _conditionStoreManagerAddress, address _tokenAddress) external;
        function hashValues(uint256 _amount, address _receiver, address _sender, bytes32 _lockCondition, bytes32 _releaseCondition) external view returns (bytes32);
        function generateId(bytes32 _agreementId, bytes32 _valueHash) external view returns (bytes32);
        function fulfill(bytes32 _agreementId, uint256 _amount, address _receiver, address _sender, bytes32 _lockCondition, bytes32 _releaseCondition) external returns (uint8);
    }

    #[sol(rpc)]
    interface ComputeExecutionCondition {
        function initialize(address _owner, address _conditionStoreManagerAddress, address _agreementStoreManagerAddress) external;
        function hashValues(bytes32 _did, address _computeConsumer) external view returns (bytes32);
        function generateId(bytes32 _agreementId, bytes32 _valueHash) external view returns (bytes32);
        function fulfill(bytes32 _agreementId, bytes32 _did, address _computeConsumer) external returns (uint8);
        function wasComputeTriggered(bytes32 _did, address _computeConsumer) external view returns (bool);
        function abortByTimeOut(bytes32 _id) external returns (uint8);
    }
}

/// The contracts a deployment consists of, in deployment order (libraries first).
pub const LIBRARIES: [&str; 2] = ["EpochLibrary", "DIDRegistryLibrary"];
pub const CONTRACTS: [&str; 9] = [
    "OceanToken",
    "Dispenser",
    "DIDRegistry",
    "ConditionStoreManager",
    "TemplateStoreManager",
    "AgreementStoreManager",
    "LockRewardCondition",
    "EscrowReward",
    "ComputeExecutionCondition",
];

/// Condition states of the ConditionStoreManager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionState {
    Uninitialized,
    Unfulfilled,
    Fulfilled,
    Aborted,
}

impl ConditionState {
    pub fn from_u8(v: u8) -> ConditionState {
        match v {
            1 => ConditionState::Unfulfilled,
            2 => ConditionState::Fulfilled,
            3 => ConditionState::Aborted,
            _ => ConditionState::Uninitialized,
        }
    }
}
